"""Clerk's per-instance rate limit, enforced strictly: at most N admitted requests in ANY 10 s window.

A sliding log of admission times (not a bucket), so the simulator can never be more lenient than
Clerk: a client that passes here passes there. It also records the busiest window it has seen,
which is what the benchmarks report as "peak 10-second window".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

WINDOW_S = 10.0


class SlidingWindowLimit:
    """Admit at most ``limit`` requests in any ``WINDOW_S``-second window."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._admitted: deque[float] = deque()
        self.max_in_window = 0

    def try_admit(self) -> float | None:
        """Admit now (returns None) or return the seconds until a slot frees up."""
        now = self._clock()
        log = self._admitted
        while log and log[0] <= now - WINDOW_S:
            log.popleft()
        if len(log) >= self.limit:
            return log[0] + WINDOW_S - now
        log.append(now)
        self.max_in_window = max(self.max_in_window, len(log))
        return None

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        """``Retry-After`` value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(wait_s)))
