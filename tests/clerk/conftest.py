"""Fixtures for the Clerk client tests: a controllable clock, a test key, a client factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.vault import SecretKey

API_URL = "https://api.clerk.test/v1"
KEY_VALUE = "sk_test_" + "Zq9xW" * 8 + "t4Kd"
"""A long key so a leak of any part of it (not just the masked fingerprint) is detectable."""
KEY_BODY = KEY_VALUE[len("sk_test_") : -4]


class FakeClock:
    """Time that moves only when someone sleeps on it; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key() -> SecretKey:
    return SecretKey(KEY_VALUE)


@pytest.fixture
def budget(clock: FakeClock) -> InstanceBudget:
    return InstanceBudget(1000, 1.0, instance_id="ins_test", clock=clock, sleep=clock.sleep)


MakeClient = Callable[..., ClerkClient]


@pytest.fixture
async def make_client(key: SecretKey, budget: InstanceBudget, clock: FakeClock) -> AsyncIterator[MakeClient]:
    """Build clients that never really sleep (backoff scaled to 0, retry sleeps on the fake clock)."""
    made: list[ClerkClient] = []

    def make(
        transport: httpx.AsyncBaseTransport | None = None, api_url: str = API_URL, **options: Any
    ) -> ClerkClient:
        opts = ClientOptions(**{"backoff_scale": 0.0, "retry_attempts": 4, **options})
        client = ClerkClient(key, api_url, budget, opts, transport, label="acme", sleep=clock.sleep)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
