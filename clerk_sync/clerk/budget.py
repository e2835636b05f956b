"""Per-instance request pacing: no 10-second window ever holds more than the instance's budget.

Clerk limits each *instance* (1000 requests per 10 s in production, 100 in development), and the
customer's own application shares that limit, so clerk-sync may use only ``rate.share`` of it:
``budget = max(1, floor(share * limit))``. Every resource and every tenant enrolled on the same
instance draws from one ``InstanceBudget`` (``BudgetRegistry`` hands them out).

Two mechanisms, because each alone is wrong:

* **A sliding log** of the last ``budget`` send times is the hard guarantee: a request may go only
  when fewer than ``budget`` requests were sent in the last ``window_s + margin_s`` seconds. The
  margin covers the fact that Clerk's window counts *arrivals*, and two requests sent 10.0 s apart
  can arrive 9.9 s apart. (A plain leaky bucket such as ``aiolimiter.AsyncLimiter(B, 10)`` is not
  enough: its burst equals ``B``, so it admits ~2B requests in the first 10 s.)
* **A spread** (GCRA: steady rate ``budget / window_s`` with a burst of ``budget / 10``) so that a
  window's requests are not all sent in its first second. It only smooths; it never adds to what
  the log allows, so utilisation stays near ``budget / (window_s + margin_s)``.

``pause_for(seconds)`` (called on a 429) blocks every ``acquire()`` of the instance until then:
when Clerk says the instance is over its limit, every coroutine on it stops, not just the one that
got the 429.

Clock and sleep are injected so tests drive time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from clerk_sync.config import RateSettings

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

WINDOW_S = 10.0
"""Clerk's rate-limit window."""
DEFAULT_MARGIN_S = 0.2
"""Extra seconds a send stays in the log, for send-to-arrival jitter."""
PRODUCTION_LIMIT_PER_10S = 1000
DEVELOPMENT_LIMIT_PER_10S = 100


def budget_size(limit_per_10s: int, share: float) -> int:
    """Requests clerk-sync may send per window: ``max(1, floor(share * limit))``."""
    # round() first so that e.g. 0.29 * 100 (= 28.999…) gives 29, not 28.
    return max(1, math.floor(round(share * limit_per_10s, 6)))


def instance_limit(environment: str, override: int | None = None) -> int:
    """Clerk's limit for an instance: the override, else 1000 (production) or 100 (development)."""
    if override is not None:
        return override
    return PRODUCTION_LIMIT_PER_10S if environment == "production" else DEVELOPMENT_LIMIT_PER_10S


class InstanceBudget:
    """The request budget of one Clerk instance, shared by every coroutine that talks to it."""

    def __init__(
        self,
        limit_per_10s: int,
        share: float = 1.0,
        *,
        instance_id: str | None = None,
        margin_s: float = DEFAULT_MARGIN_S,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if limit_per_10s < 1:
            raise ValueError("limit_per_10s must be at least 1")
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.instance_id = instance_id
        self.limit_per_10s = limit_per_10s
        self.share = share
        self._capacity = budget_size(limit_per_10s, share)
        self._log_window_s = WINDOW_S + margin_s
        self._sent: deque[float] = deque(maxlen=self._capacity)
        # GCRA: one emission interval per request, tolerance for a small burst.
        self._interval_s = WINDOW_S / self._capacity
        burst = max(1, self._capacity // 10) if burst is None else max(1, burst)
        self._tolerance_s = (burst - 1) * self._interval_s
        self._tat = -math.inf  # theoretical arrival time of the next request
        self._paused_until = -math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def capacity_per_10s(self) -> int:
        """The budget: the most requests any 10-second window may hold."""
        return self._capacity

    @property
    def paused_until(self) -> float:
        """Clock time before which no request is sent (after a 429)."""
        return self._paused_until

    def pause_for(self, seconds: float) -> None:
        """Block every ``acquire()`` of this instance for ``seconds`` from now (never shortens a pause)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def used_in_last(self, seconds: float) -> int:
        """Requests sent in the last ``seconds`` (exact up to the budget; the log keeps no more)."""
        cutoff = self._clock() - seconds
        return sum(1 for t in self._sent if t > cutoff)

    def _wait_s(self, now: float) -> float:
        """How long until a request may go at ``now``; 0 when it may go now."""
        waits = [self._paused_until - now, self._tat - self._tolerance_s - now]
        if len(self._sent) >= self._capacity:
            waits.append(self._sent[0] + self._log_window_s - now)
        return max(0.0, *waits)

    async def acquire(self) -> None:
        """Wait until one more request fits the budget, then record it as sent now."""
        loop = asyncio.get_running_loop()
        if loop is not self._lock_loop:
            # An asyncio.Lock belongs to one event loop; a budget outliving its loop (a CLI that
            # calls asyncio.run twice, a test) gets a fresh lock instead of a RuntimeError.
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            while True:
                now = self._clock()
                wait_s = self._wait_s(now)
                if wait_s <= 0:
                    break
                # Holding the lock while sleeping keeps waiters first-come first-served; a pause
                # set meanwhile is seen when the loop re-checks.
                await self._sleep(wait_s)
            self._sent.append(now)
            self._tat = max(self._tat, now) + self._interval_s

    def __repr__(self) -> str:
        return (
            f"InstanceBudget(instance_id={self.instance_id!r}, capacity_per_10s={self._capacity}, "
            f"limit_per_10s={self.limit_per_10s}, share={self.share})"
        )


class BudgetRegistry:
    """One ``InstanceBudget`` per Clerk instance id for the whole process."""

    def __init__(
        self, rate: RateSettings, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[str, InstanceBudget] = {}

    def for_instance(self, instance_id: str, environment: str) -> InstanceBudget:
        """The shared budget of ``instance_id``, created on first use from the rate settings."""
        budget = self._budgets.get(instance_id)
        if budget is None:
            budget = InstanceBudget(
                instance_limit(environment, self.rate.limit_per_10s),
                self.rate.share,
                instance_id=instance_id,
                clock=self._clock,
                sleep=self._sleep,
            )
            self._budgets[instance_id] = budget
        return budget

    def __len__(self) -> int:
        return len(self._budgets)
