"""InstanceBudget: no 10-second window above the budget, under concurrency and after pauses."""

from __future__ import annotations

import asyncio
import bisect

import pytest

from clerk_sync.clerk.budget import BudgetRegistry, InstanceBudget, budget_size
from clerk_sync.config import RateSettings
from tests.clerk.conftest import FakeClock


def make_budget(clock: FakeClock, limit: int = 100, share: float = 1.0, **kw: object) -> InstanceBudget:
    return InstanceBudget(limit, share, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def max_in_any_window(times: list[float], window_s: float) -> int:
    """Most send times inside any half-open window [t, t + window_s)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times)), default=0)


async def send_times(budget: InstanceBudget, clock: FakeClock, workers: int, per_worker: int) -> list[float]:
    times: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            await budget.acquire()
            times.append(clock())

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times


@pytest.mark.parametrize(
    ("limit", "share", "expected"),
    [(1000, 0.5, 500), (100, 1.0, 100), (100, 0.5, 50), (100, 0.29, 29), (100, 0.001, 1), (7, 0.5, 3)],
)
def test_budget_is_floor_of_share_times_limit_and_at_least_one(
    limit: int, share: float, expected: int
) -> None:
    assert budget_size(limit, share) == expected
    if share >= 0.01:
        assert InstanceBudget(limit, share).capacity_per_10s == expected


async def test_no_window_exceeds_budget_under_many_concurrent_coroutines(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=100, share=0.3)  # 30 per 10 s
    times = await send_times(budget, clock, workers=40, per_worker=25)

    assert len(times) == 1000
    assert max_in_any_window(times, 10.0) == 30
    # The log keeps sends for 10 s plus the safety margin, so even 10.2 s windows hold no more.
    assert max_in_any_window(times, 10.2) <= 30
    # ...and it still uses the budget: 1000 requests at 30 per 10.2 s need ~340 s, not much more.
    assert clock() - 1000.0 <= 1000 / 30 * 10.2 + 1


async def test_first_window_is_not_twice_the_budget(clock: FakeClock) -> None:
    """The aiolimiter pitfall: a bucket with burst B lets ~2B through in the first 10 s."""
    budget = make_budget(clock, limit=100)
    times = await send_times(budget, clock, workers=1, per_worker=250)

    assert sum(1 for t in times if t < 1000.0 + 10.0) <= 100
    assert max_in_any_window(times, 10.0) <= 100


async def test_a_window_is_spread_out_rather_than_one_burst(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=100)
    times = await send_times(budget, clock, workers=10, per_worker=10)

    assert max_in_any_window(times, 1.0) <= 20  # a burst of B/10, then B/10 per second
    assert max(times) - min(times) < 10.0  # but the window's budget is all used within it


async def test_pause_blocks_every_acquire_until_it_ends(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=1000)
    await budget.acquire()
    budget.pause_for(7.5)
    paused_at = clock()

    times = await send_times(budget, clock, workers=5, per_worker=3)

    assert min(times) >= paused_at + 7.5
    assert budget.used_in_last(10.0) == 16


async def test_pause_set_while_others_wait_is_honoured(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=10)  # 10 per 10 s: the 11th waits for the window
    for _ in range(10):
        await budget.acquire()
    start = clock()
    waiter = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0)
    budget.pause_for(30.0)  # a 429 elsewhere, while the waiter sleeps for the window
    await waiter

    assert clock() >= start + 30.0


async def test_pause_never_shortens_a_longer_pause(clock: FakeClock) -> None:
    budget = make_budget(clock)
    budget.pause_for(20.0)
    budget.pause_for(1.0)
    assert budget.paused_until == clock() + 20.0


async def test_window_invariant_holds_across_a_pause(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=100, share=0.5)
    first = await send_times(budget, clock, workers=8, per_worker=10)
    budget.pause_for(3.0)
    second = await send_times(budget, clock, workers=8, per_worker=10)

    assert max_in_any_window(first + second, 10.0) <= 50


async def test_used_in_last_counts_recent_sends(clock: FakeClock) -> None:
    budget = make_budget(clock, limit=1000)
    for _ in range(3):
        await budget.acquire()
    clock.now += 5.0
    await budget.acquire()

    assert budget.used_in_last(10.0) == 4
    assert budget.used_in_last(1.0) == 1


def test_registry_shares_one_budget_per_instance() -> None:
    registry = BudgetRegistry(RateSettings(share=0.5))

    prod = registry.for_instance("ins_a", "production")
    assert registry.for_instance("ins_a", "production") is prod
    assert prod.capacity_per_10s == 500
    dev = registry.for_instance("ins_b", "development")
    assert dev is not prod
    assert dev.capacity_per_10s == 50
    assert len(registry) == 2


def test_registry_honours_a_limit_override() -> None:
    registry = BudgetRegistry(RateSettings(share=1.0, limit_per_10s=40))
    assert registry.for_instance("ins_a", "production").capacity_per_10s == 40


def test_a_budget_survives_its_event_loop(clock: FakeClock) -> None:
    """A process-wide budget may be used from one asyncio.run() after another."""
    budget = make_budget(clock, limit=10)

    for _ in range(2):
        times = asyncio.run(send_times(budget, clock, workers=4, per_worker=5))  # contended: waiters queue
        assert len(times) == 20
