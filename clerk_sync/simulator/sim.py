"""``SimulatedClerk``: the instances, keys, rate limits, faults, hooks and counters of the fake Clerk.

The HTTP layer (``api.py``, ``control.py``) is a thin shell over this object, so tests can script
the same things in-process (``sim.instance(key).delete_user(...)``) or over HTTP from a subprocess.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams

from clerk_sync.simulator.ratelimit import SlidingWindowLimit
from clerk_sync.simulator.state import InstanceState

if TYPE_CHECKING:
    from starlette.applications import Starlette

KEY_RE = re.compile(r"sk_(live|test)_([A-Za-z0-9]+)")
FAULT_KINDS = ("5xx", "slow", "truncated", "invalid_json", "429")
DEFAULT_LIMITS = {"production": 1000, "development": 100}

RequestHook = Callable[[InstanceState, str, QueryParams], Any]


@dataclass
class Fault:
    """One injected fault: applies to the next ``count`` matching API requests."""

    kind: str
    count: int = 1
    path_prefix: str | None = None
    instance: str | None = None
    delay_s: float = 0.0
    retry_after_s: int = 1

    def matches(self, path: str, inst: InstanceState) -> bool:
        """Whether a request to ``path`` (relative to /v1) of ``inst`` is hit."""
        if self.instance is not None and self.instance not in (inst.key, inst.instance_id):
            return False
        if self.path_prefix is None:
            return True
        prefix = self.path_prefix.removeprefix("/v1")
        return path.startswith(prefix or "/")


@dataclass
class InstanceCounters:
    """What the simulator saw for one instance."""

    admitted: int = 0
    refused_429: int = 0
    unauthorized: int = 0
    non_get: int = 0
    offset_requests: int = 0
    cursor_requests: int = 0
    requests_by_path: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)


class SimulatedClerk:
    """A fake Clerk Backend API: any number of instances, each with deterministic data for ``seed``."""

    def __init__(
        self,
        seed: int = 1,
        users: int = 1000,
        orgs: int = 50,
        instances: list[str] | None = None,
        limit_per_10s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seed = seed
        self.users = users
        self.orgs = orgs
        self.allowed = None if instances is None else set(instances)
        self.limit_per_10s = limit_per_10s
        self.clock = clock
        self.clock_ms: int | None = None
        self.lock = threading.RLock()
        self._instances: dict[str, InstanceState] = {}
        self._limits: dict[str, SlidingWindowLimit] = {}
        self._counters: dict[str, InstanceCounters] = {}
        self._faults: list[Fault] = []
        self._hooks: list[RequestHook] = []
        self.global_non_get = 0
        self.global_unauthorized = 0
        self._app: Starlette | None = None

    # ------------------------------------------------------------------ instances and keys

    def now_ms(self) -> int:
        """ "Now" for new objects: ``clock_ms`` when set, else real time."""
        return self.clock_ms if self.clock_ms is not None else int(time.time() * 1000)

    def instance(self, key: str) -> InstanceState:
        """The instance a secret key opens (created on first use); KeyError if the key opens none."""
        with self.lock:
            inst = self._instances.get(key)
            if inst is not None:
                return inst
            m = KEY_RE.fullmatch(key)
            if m is None or (self.allowed is not None and m.group(2) not in self.allowed):
                raise KeyError("no such instance")
            environment = "production" if m.group(1) == "live" else "development"
            inst = InstanceState(
                key=key,
                environment=environment,
                name=m.group(2),
                seed=self.seed,
                users=self.users,
                orgs=self.orgs,
                lock=self.lock,
                now_ms=self.now_ms,
            )
            limit = self.limit_per_10s or DEFAULT_LIMITS[environment]
            self._instances[key] = inst
            self._limits[key] = SlidingWindowLimit(limit, self.clock)
            self._counters[key] = InstanceCounters()
            return inst

    def authenticate(self, authorization: str | None) -> InstanceState | None:
        """The instance of a ``Bearer`` header, or None (unknown, malformed or revoked key)."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        try:
            inst = self.instance(authorization[len("Bearer ") :].strip())
        except KeyError:
            return None
        return None if inst.revoked else inst

    def limit(self, inst: InstanceState) -> SlidingWindowLimit:
        """The rate limit of an instance."""
        return self._limits[inst.key]

    def counters(self, inst: InstanceState) -> InstanceCounters:
        """The counters of an instance."""
        return self._counters[inst.key]

    # ------------------------------------------------------------------ hooks and faults

    def on_request(self, fn: RequestHook) -> RequestHook:
        """Call ``fn(inst, path, params)`` before each API response is built (usable as a decorator)."""
        self._hooks.append(fn)
        return fn

    def run_hooks(self, inst: InstanceState, path: str, params: QueryParams) -> None:
        """Run the request hooks (in the server's thread)."""
        for fn in list(self._hooks):
            fn(inst, path, params)

    def inject(
        self,
        kind: str,
        count: int = 1,
        path_prefix: str | None = None,
        instance: str | None = None,
        delay_s: float = 0.0,
        retry_after_s: int = 1,
    ) -> None:
        """Make the next ``count`` matching API requests fail as ``kind`` (see ``FAULT_KINDS``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        with self.lock:
            self._faults.append(Fault(kind, count, path_prefix, instance, delay_s, retry_after_s))

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self.lock:
            self._faults.clear()

    def take_fault(self, path: str, inst: InstanceState) -> Fault | None:
        """Consume one use of the first pending fault that matches this request."""
        with self.lock:
            for fault in self._faults:
                if fault.matches(path, inst):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    self._counters[inst.key].injected[fault.kind] += 1
                    return fault
            return None

    # ------------------------------------------------------------------ stats

    def stats(self, instance_key: str | None = None) -> dict[str, Any]:
        """Counters of one instance (by key), or summed over all of them with ``by_instance``."""
        with self.lock:
            if instance_key is not None:
                try:
                    inst = self.instance(instance_key)
                except KeyError:
                    return _stats_of(InstanceCounters(), 0)
                return _stats_of(self._counters[inst.key], self._limits[inst.key].max_in_window)
            total = InstanceCounters()
            by_instance = {}
            peak = 0
            for key, c in self._counters.items():
                inst = self._instances[key]
                peak_i = self._limits[key].max_in_window
                by_instance[inst.instance_id] = {
                    "environment": inst.environment,
                    "name": inst.name,
                    **_stats_of(c, peak_i),
                }
                peak = max(peak, peak_i)
                total.admitted += c.admitted
                total.refused_429 += c.refused_429
                total.offset_requests += c.offset_requests
                total.cursor_requests += c.cursor_requests
                total.requests_by_path.update(c.requests_by_path)
                total.injected.update(c.injected)
            total.non_get = self.global_non_get
            total.unauthorized = self.global_unauthorized
            out = _stats_of(total, peak)
            out["by_instance"] = by_instance
            return out

    # ------------------------------------------------------------------ ASGI

    @property
    def app(self) -> Starlette:
        """The Starlette app: Clerk's API under ``/v1``, the control API under ``/_sim``."""
        if self._app is None:
            from clerk_sync.simulator.api import build_app

            self._app = build_app(self)
        return self._app


def _stats_of(c: InstanceCounters, peak: int) -> dict[str, Any]:
    return {
        "admitted": c.admitted,
        "refused_429": c.refused_429,
        "unauthorized": c.unauthorized,
        "non_get": c.non_get,
        "requests_by_path": dict(c.requests_by_path),
        "max_requests_in_any_10s": peak,
        "offset_requests": c.offset_requests,
        "cursor_requests": c.cursor_requests,
        "injected": dict(c.injected),
    }
