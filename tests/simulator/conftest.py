"""Fixtures: a small simulator and an httpx client on its ASGI app (no sockets, no sleeps)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from clerk_sync.simulator import SimulatedClerk

KEY = "sk_live_acme"


class FakeClock:
    """A monotonic clock the test moves by hand (the rate limit's window is 10 s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> SimulatedClerk:
    return SimulatedClerk(seed=7, users=1234, orgs=12, limit_per_10s=100_000, clock=clock)


def client_for(sim: SimulatedClerk, key: str | None = KEY) -> httpx.AsyncClient:
    """An httpx client on the simulator's app, authenticated with ``key``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://clerk.test/v1", headers=headers
    )


@pytest.fixture
async def api(sim: SimulatedClerk) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sim) as client:
        yield client
