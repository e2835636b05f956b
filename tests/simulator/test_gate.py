"""What happens before an endpoint: method, key, rate limit, injected faults, and the counters."""

from __future__ import annotations

import httpx
import orjson
import pytest

from clerk_sync.simulator import SimulatedClerk
from tests.simulator.conftest import KEY, FakeClock, client_for


def assert_clerk_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status
    body = r.json()
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["message"] and body["errors"][0]["long_message"]
    assert body["clerk_trace_id"]


@pytest.mark.parametrize(
    "header", [None, "Bearer nope", "sk_live_acme", "Bearer sk_live_", "Bearer sk_prod_x"]
)
async def test_bad_keys_get_401(sim: SimulatedClerk, header: str | None):
    headers = {"Authorization": header} if header else {}
    async with client_for(sim, key=None) as client:
        r = await client.get("/users", headers=headers)
    assert_clerk_error(r, 401, "authentication_invalid")
    assert sim.stats()["unauthorized"] == 1


async def test_live_and_test_keys_are_distinct_instances(sim: SimulatedClerk):
    async with client_for(sim, "sk_live_acme") as live, client_for(sim, "sk_test_acme") as test:
        prod = (await live.get("/instance")).json()
        dev = (await test.get("/instance")).json()
        prod_users = (await live.get("/users")).json()
        dev_users = (await test.get("/users")).json()
    assert prod["environment_type"] == "production" and dev["environment_type"] == "development"
    assert prod["id"] != dev["id"]
    assert prod_users[0]["id"] != dev_users[0]["id"]


async def test_instances_list_restricts_names():
    sim = SimulatedClerk(users=5, orgs=1, instances=["acme", "beta"])
    for key, status in (("sk_live_beta", 200), ("sk_test_acme", 200), ("sk_live_gamma", 401)):
        async with client_for(sim, key) as client:
            assert (await client.get("/instance")).status_code == status
    with pytest.raises(KeyError):
        sim.instance("sk_live_gamma")


async def test_revoked_key_gets_401_until_restored(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    inst.revoke_key()
    assert_clerk_error(await api.get("/instance"), 401, "authentication_invalid")
    assert sim.stats(KEY)["unauthorized"] == 1 and sim.stats(KEY)["admitted"] == 0
    inst.restore_key()
    assert (await api.get("/instance")).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_non_get_is_refused_and_counted(api: httpx.AsyncClient, sim: SimulatedClerk, method: str):
    uid = sim.instance(KEY).user_ids()[0]
    r = await api.request(method, f"/users/{uid}", json={"first_name": "x"} if method != "HEAD" else None)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert sim.stats()["non_get"] == 1 and sim.stats(KEY)["non_get"] == 1
    assert sim.instance(KEY).get_user(uid) is not None
    assert sim.stats(KEY)["admitted"] == 0


async def test_rate_limit_is_strict_over_any_window(clock: FakeClock):
    sim = SimulatedClerk(users=3, orgs=1, limit_per_10s=5, clock=clock)
    async with client_for(sim) as api:
        for _ in range(5):
            assert (await api.get("/instance")).status_code == 200
            clock.advance(1.0)  # admitted at t=0..4
        r = await api.get("/instance")  # t=5
        assert_clerk_error(r, 429, "too_many_requests")
        assert r.headers["retry-after"] == "5"  # the t=0 request leaves the window at t=10
        clock.advance(4.5)  # t=9.5
        r = await api.get("/instance")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        clock.advance(0.5)  # t=10: the first one left
        assert (await api.get("/instance")).status_code == 200
        assert (await api.get("/instance")).status_code == 429
    stats = sim.stats(KEY)
    assert stats["admitted"] == 6 and stats["refused_429"] == 3
    assert stats["max_requests_in_any_10s"] == 5
    assert stats["requests_by_path"] == {"/instance": 6}


async def test_default_limits_by_environment(clock: FakeClock):
    sim = SimulatedClerk(users=1, orgs=0, clock=clock)
    async with client_for(sim, "sk_test_dev") as dev, client_for(sim, "sk_live_prod") as prod:
        dev_codes = [(await dev.get("/instance")).status_code for _ in range(101)]
        prod_codes = [(await prod.get("/instance")).status_code for _ in range(101)]
    assert dev_codes.count(200) == 100 and dev_codes[-1] == 429
    assert prod_codes.count(200) == 101
    assert sim.stats()["by_instance"][sim.instance("sk_test_dev").instance_id]["refused_429"] == 1


async def test_injected_5xx_and_429(api: httpx.AsyncClient, sim: SimulatedClerk):
    sim.inject("5xx", count=2, path_prefix="/users")
    assert (await api.get("/instance")).status_code == 200
    assert_clerk_error(await api.get("/users"), 503, "service_unavailable")
    assert (await api.get("/users/count")).status_code == 503
    assert (await api.get("/users")).status_code == 200
    sim.inject("429", count=3, retry_after_s=7)
    for _ in range(3):
        r = await api.get("/users")
        assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert (await api.get("/users")).status_code == 200
    assert sim.stats(KEY)["injected"] == {"5xx": 2, "429": 3}


async def test_injected_truncated_and_invalid_json(api: httpx.AsyncClient, sim: SimulatedClerk):
    sim.inject("truncated")
    r = await api.get("/users", params={"limit": 20})
    assert r.status_code == 200 and r.content.startswith(b"[{")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    sim.inject("invalid_json")
    r = await api.get("/users")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    assert len((await api.get("/users")).json()) == 10


async def test_injected_slow_waits(api: httpx.AsyncClient, sim: SimulatedClerk, monkeypatch):
    import clerk_sync.simulator.api as api_module

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(api_module.asyncio, "sleep", fake_sleep)
    sim.inject("slow", delay_s=2.5, instance="sk_live_other")
    assert (await api.get("/users")).status_code == 200 and slept == []
    sim.clear_faults()
    sim.inject("slow", delay_s=2.5, instance=KEY)
    assert (await api.get("/users")).status_code == 200 and slept == [2.5]


def test_unknown_fault_kind_is_refused(sim: SimulatedClerk):
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.inject("meteor")


async def test_hooks_see_instance_path_and_params(api: httpx.AsyncClient, sim: SimulatedClerk):
    seen = []
    sim.on_request(lambda inst, path, params: seen.append((inst.key, path, params.get("limit"))))
    await api.get("/users", params={"limit": 3})
    await api.get("/organizations")
    assert seen == [(KEY, "/users", "3"), (KEY, "/organizations", None)]


async def test_unknown_path_is_404(api: httpx.AsyncClient):
    assert_clerk_error(await api.get("/clients"), 404, "resource_not_found")


async def test_non_get_anywhere_under_v1_is_counted_even_without_a_key(sim: SimulatedClerk):
    async with client_for(sim, key=None) as client:
        for path in ("http://clerk.test/v1", "/", "/users", "/organizations/org_x/memberships"):
            assert (await client.post(path)).status_code == 405
    assert sim.stats()["non_get"] == 4


async def test_unimplemented_clerk_filters_are_refused_not_ignored(api: httpx.AsyncClient):
    r = await api.get("/users", params={"email_address": "a@example.com"})
    assert_clerk_error(r, 422, "simulator_unsupported_parameter")
    assert "email_address" in r.json()["errors"][0]["long_message"]
    assert (await api.get("/organizations", params={"query": "acme"})).status_code == 422
    assert (await api.get("/users", params={"paginated": "true", "limit": 1})).status_code == 200
