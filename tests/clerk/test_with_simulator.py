"""The client and walkers against the simulator's ASGI app, on one fake clock shared by both sides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.clerk.walk import walk
from clerk_sync.errors import (
    ClerkSyncError,
    KeyRejectedError,
    ReadOnlyViolationError,
    RetriesExhaustedError,
)
from clerk_sync.resources import INVITATIONS, ORGANIZATION_MEMBERSHIPS, ORGANIZATIONS, USERS
from clerk_sync.simulator import SimulatedClerk, run_simulator
from clerk_sync.vault import SecretKey
from tests.clerk.conftest import FakeClock

KEY = "sk_test_walker"
SIM_URL = "http://clerk.sim/v1"

SimClient = Callable[..., ClerkClient]


@pytest.fixture
def sim(clock: FakeClock) -> SimulatedClerk:
    return SimulatedClerk(seed=7, users=1200, orgs=30, clock=clock)


@pytest.fixture
async def sim_client(sim: SimulatedClerk, clock: FakeClock) -> AsyncIterator[SimClient]:
    made: list[ClerkClient] = []

    def make(budget: InstanceBudget | None = None, key: str = KEY, **options: Any) -> ClerkClient:
        budget = budget or InstanceBudget(1000, 1.0, clock=clock, sleep=clock.sleep)
        opts = ClientOptions(**{"backoff_scale": 0.0, **options})
        client = ClerkClient(
            SecretKey(key), SIM_URL, budget, opts, httpx.ASGITransport(app=sim.app), sleep=clock.sleep
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def walked_ids(client: ClerkClient, resource: Any, **kw: Any) -> list[str]:
    return [item["id"] async for page in walk(client, resource, **kw) for item in page.items]


async def test_users_are_walked_by_cursor_never_by_offset(sim: SimulatedClerk, sim_client: SimClient) -> None:
    client = sim_client()

    ids = await walked_ids(client, USERS)

    assert ids == sim.instance(KEY).user_ids()
    assert len(ids) == 1200
    stats = sim.stats(KEY)
    assert stats["offset_requests"] == 0
    assert stats["admitted"] == 3 == client.stats.requests


async def test_a_deletion_between_pages_skips_nobody(sim: SimulatedClerk, sim_client: SimClient) -> None:
    """The reason users walk by cursor: with offsets, deleting an already-read user shifts the next page."""
    inst = sim.instance(KEY)
    before = inst.user_ids()
    victim = before[10]

    def delete_once(_inst: Any, path: str, params: Any) -> None:
        if path.endswith("/users") and params.get("starting_after") and victim in inst.user_ids():
            inst.delete_user(victim)

    sim.on_request(delete_once)
    ids = await walked_ids(sim_client(), USERS, page_size=100)

    assert ids == before  # the victim was read before it was deleted; nobody after it was skipped


async def test_organizations_and_memberships_walk_by_offset(
    sim: SimulatedClerk, sim_client: SimClient
) -> None:
    inst = sim.instance(KEY)
    client = sim_client()

    assert sorted(await walked_ids(client, ORGANIZATIONS, page_size=7)) == sorted(inst.org_ids())
    assert sorted(await walked_ids(client, ORGANIZATION_MEMBERSHIPS, page_size=50)) == sorted(
        inst.membership_ids()
    )


async def test_invitations_include_the_revoked_ones(sim: SimulatedClerk, sim_client: SimClient) -> None:
    inst = sim.instance(KEY)
    revoked = inst.create_invitation("gone@example.com")
    inst.set_invitation_status(revoked["id"], "revoked")

    ids = await walked_ids(sim_client(), INVITATIONS)

    assert revoked["id"] in ids
    assert len(ids) == len(set(ids))


async def test_a_revoked_key_is_rejected(sim: SimulatedClerk, sim_client: SimClient) -> None:
    sim.instance(KEY).revoke_key()

    with pytest.raises(KeyRejectedError) as info:
        await sim_client().get_instance()
    assert info.value.status == 401
    assert sim.stats(KEY)["admitted"] <= 1


async def test_faults_are_retried_and_the_walk_completes(sim: SimulatedClerk, sim_client: SimClient) -> None:
    for kind in ("5xx", "truncated", "invalid_json"):
        sim.inject(kind, count=2, path_prefix="/users")
    client = sim_client(retry_attempts=8)

    ids = await walked_ids(client, USERS)

    assert ids == sim.instance(KEY).user_ids()
    assert client.stats.retries == 6


async def test_a_429_storm_is_waited_out(
    sim: SimulatedClerk, sim_client: SimClient, clock: FakeClock
) -> None:
    sim.inject("429", count=12, retry_after_s=3)
    client = sim_client(retry_attempts=3)  # 429s do not use up attempts
    start = clock()

    ids = await walked_ids(client, USERS)

    assert ids == sim.instance(KEY).user_ids()
    assert client.stats.rate_limited == 12
    assert clock() - start >= 12 * 3  # every Retry-After was honoured


async def test_concurrent_walks_on_one_instance_stay_within_its_limit(
    clock: FakeClock, sim_client: SimClient
) -> None:
    """Three resources walked at once through one budget: no window over Clerk's limit, no 429."""
    strict = SimulatedClerk(seed=3, users=3000, orgs=60, limit_per_10s=20, clock=clock)
    budget = InstanceBudget(20, 1.0, clock=clock, sleep=clock.sleep)
    clients = [
        ClerkClient(SecretKey(KEY), SIM_URL, budget, ClientOptions(), httpx.ASGITransport(app=strict.app))
        for _ in range(3)
    ]
    try:
        results = await asyncio.gather(
            walked_ids(clients[0], USERS, page_size=50),
            walked_ids(clients[1], ORGANIZATIONS, page_size=5),
            walked_ids(clients[2], ORGANIZATION_MEMBERSHIPS, page_size=20),
        )
    finally:
        for c in clients:
            await c.aclose()

    stats = strict.stats(KEY)
    assert len(results[0]) == 3000
    assert stats["refused_429"] == 0
    assert stats["max_requests_in_any_10s"] == 20  # used the whole limit, never more
    assert sum(c.stats.requests for c in clients) == stats["admitted"] > 60


async def test_a_share_leaves_the_rest_of_the_limit_alone(clock: FakeClock) -> None:
    strict = SimulatedClerk(seed=3, users=2000, orgs=0, limit_per_10s=20, clock=clock)
    budget = InstanceBudget(20, 0.5, clock=clock, sleep=clock.sleep)
    async with ClerkClient(
        SecretKey(KEY), SIM_URL, budget, transport=httpx.ASGITransport(app=strict.app)
    ) as c:
        ids = await walked_ids(c, USERS, page_size=50)

    assert len(ids) == 2000
    assert strict.stats(KEY)["max_requests_in_any_10s"] == 10


async def test_over_the_limit_the_client_backs_off_and_finishes(clock: FakeClock) -> None:
    """Someone else uses the instance too (here: a budget that believes in a bigger limit): 429s, then done."""
    strict = SimulatedClerk(seed=3, users=2000, orgs=0, limit_per_10s=10, clock=clock)
    budget = InstanceBudget(1000, 1.0, clock=clock, sleep=clock.sleep)
    client = ClerkClient(SecretKey(KEY), SIM_URL, budget, transport=httpx.ASGITransport(app=strict.app))
    async with client:
        ids = await walked_ids(client, USERS, page_size=50)

    stats = strict.stats(KEY)
    assert len(ids) == 2000
    assert client.stats.rate_limited == stats["refused_429"] > 0
    assert stats["max_requests_in_any_10s"] == 10


async def test_nothing_but_get_reaches_the_simulator(sim: SimulatedClerk, sim_client: SimClient) -> None:
    client = sim_client()

    for method in ("POST", "PATCH", "DELETE", "PUT"):
        with pytest.raises(ReadOnlyViolationError):
            await client._http.request(method, "/users", json={"first_name": "Mallory"})
    await client.get_instance()

    assert sim.stats()["non_get"] == 0
    assert sim.stats(KEY)["admitted"] == 1


def test_the_key_stays_out_of_real_http_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Over a real socket (httpx + httpcore logging at DEBUG), for a 401 and for a refused connection."""
    caplog.set_level(logging.DEBUG)
    secret = "sk_test_" + "Hush" * 10
    real = SimulatedClerk(seed=1, users=10, orgs=0)
    real.instance(secret).revoke_key()

    async def attempt(url: str) -> ClerkSyncError:
        budget = InstanceBudget(100, 1.0)
        async with ClerkClient(
            SecretKey(secret), url, budget, ClientOptions(backoff_scale=0, retry_attempts=2)
        ) as c:
            try:
                await c.get_instance()
            except ClerkSyncError as exc:
                return exc
        raise AssertionError("expected an error")

    with run_simulator(real) as url:
        rejected = asyncio.run(attempt(url))
    unreachable = asyncio.run(attempt(url))  # the server is gone now: connection refused

    assert isinstance(rejected, KeyRejectedError)
    assert isinstance(unreachable, RetriesExhaustedError)
    assert "GET" in caplog.text  # httpx did log the requests
    records = [str(vars(record)) for record in caplog.records]  # fields included, not just messages
    for text in (caplog.text, *records, str(rejected), str(unreachable), repr(rejected), repr(unreachable)):
        assert secret not in text
        assert "Hush" * 10 not in text
