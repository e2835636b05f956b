"""The long-running service: schedules passes per (tenant, resource), drains on SIGTERM, talks to systemd.

Shape (after arq's worker): ``Daemon.run()`` serves until a stop signal, ``Daemon.run_once()`` runs
every job once and exits (tests and cron). What a job *does* is injected (``PassRunner``), so the
scheduling, no-overlap, stagger, reload and drain logic is tested with fakes; ``serve()`` wires the
real sync engine, database, keyring, budgets, metrics and systemd notifications.

Scheduling (APScheduler 3.x, in-memory job store: cross-process coordination is the DB's leases):

* Each tenant and resource has an incremental job and a full-pass job (``IntervalTrigger``). Each
  runs at a fixed point of its interval (a fraction derived from the tenant name, counted from
  ``SLOT_ANCHOR``, so restarts keep it) plus up to ``jitter``, so 100 tenants spread over the
  interval instead of firing together.
* ``max_instances=1``: a run still going when the next is due makes APScheduler skip that one;
  ``coalesce=True`` + ``misfire_grace_time=None``: runs missed while the loop was busy run once, late,
  instead of N times or never (APScheduler's default grace of 1 s drops late coroutine jobs).
* Within this process a tenant's passes run one at a time (per-tenant lock; its lease in the DB is
  re-entrant for its owner, so two of our own passes must not share it), and at most
  ``daemon.max_concurrent_passes`` run at once. Different tenants never wait for each other beyond
  that bound, and every pass draws on its Clerk instance's shared budget.

Stopping: APScheduler's asyncio executor *cancels* running coroutine jobs on shutdown, so each job
only awaits (shielded) a task of ours. On SIGTERM/SIGINT the scheduler is paused, every pass's stop
event is set (the engine checks it at page boundaries, so committed pages stay and nothing is half
written), our tasks are awaited up to ``daemon.shutdown_timeout_s``, stragglers are cancelled, and
then the scheduler is shut down with ``wait=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from clerk_sync.config import ScheduleSettings, Settings
from clerk_sync.errors import ConfigError
from clerk_sync.logs import log
from clerk_sync.metrics import BudgetSource, DaemonMetrics
from clerk_sync.notify import Notifier
from clerk_sync.resources import ALL, Resource
from clerk_sync.sync import PassResult

EXIT_TEMPFAIL = 75
"""sysexits' EX_TEMPFAIL: nothing failed, but the work is not all done; try again."""

logger = logging.getLogger(__name__)

MODES = ("incremental", "full")
HEARTBEAT_S = 1.0
"""How often the scheduler's heartbeat job ticks (the watchdog and /healthz read it)."""
STALE_AFTER_S = 10.0
"""A heartbeat older than this means the loop or the scheduler is stuck."""
STATE_EVERY_S = 5.0
"""How often the daemon's state (next runs, budgets) is written for ``clerk-sync status``."""
SLOT_ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
"""Job slots are counted from this instant, so a job keeps its wall-clock slot across restarts
(a daemon restarted more often than ``full_pass_s`` still runs its full passes)."""
MIRROR_COUNTS_EVERY_S = 60.0
"""How often the ``objects_mirrored`` gauge is recounted (a grouped count over the mirror)."""


class _StillRunningFilter(logging.Filter):
    """APScheduler warns each time a job is skipped because its last run is still going.

    With long full passes that is expected and would repeat every interval; it stays at debug.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" in record.getMessage():
            log(logger, "daemon.job_still_running", logging.DEBUG)
            return False
        return True


class TenantLike(Protocol):
    """What the daemon needs of a tenant row."""

    id: int | None
    name: str


class PassOutcome(Protocol):
    """What the daemon reads of a ``sync.PassResult``."""

    status: str
    error: str | None


PassRunner = Callable[[Any, Resource, str, asyncio.Event], Awaitable[Sequence[Any]]]
"""``(tenant, resource, mode, stop) -> [PassResult]``: one pass, honouring ``stop`` at page boundaries."""
TenantLoader = Callable[[], Awaitable[Sequence[Any]]]
"""Returns the tenants to schedule (enabled, key present, not ``key_rejected``)."""
StateWriter = Callable[[dict[str, Any]], Awaitable[None]]
"""Persists the daemon's state snapshot (for ``status`` and ``/healthz``); raises when the DB is down."""


def interval_s(resource: Resource, mode: str, schedule: ScheduleSettings) -> float:
    """How often a job runs: per-resource for incremental passes, ``full_pass_s`` for full ones."""
    if mode == "full":
        return schedule.full_pass_s
    return {
        "users": schedule.users_incremental_s,
        "organizations": schedule.organizations_s,
        "organization_memberships": schedule.organization_memberships_s,
        "invitations": schedule.invitations_s,
        "sessions": schedule.sessions_s,
    }.get(resource.name, schedule.users_incremental_s)


def stagger_fraction(tenant_name: str, resource: str, mode: str) -> float:
    """A stable pseudo-random point in [0, 1) for a job, so restarts keep each tenant's slot."""
    digest = hashlib.sha256(f"{tenant_name}\0{resource}\0{mode}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def tenant_version(tenant: Any) -> tuple[Any, ...]:
    """What makes a tenant's jobs stale when it changes (a re-key, a new URL, a new instance)."""
    fields = (
        "name",
        "enabled",
        "key_id",
        "key_fingerprint",
        "key_status",
        "api_url",
        "instance_id",
        "environment",
    )
    return tuple(getattr(tenant, f, None) for f in (*fields, "updated_ms"))


class Daemon:
    """Schedules and drains passes; the collaborators decide what a pass is and where tenants come from."""

    def __init__(
        self,
        settings: Settings,
        run_pass: PassRunner,
        load_tenants: TenantLoader,
        *,
        resources: Sequence[Resource] = ALL,
        notifier: Notifier | None = None,
        metrics: DaemonMetrics | None = None,
        write_state: StateWriter | None = None,
        budgets: BudgetSource | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        heartbeat_s: float = HEARTBEAT_S,
        state_every_s: float = STATE_EVERY_S,
        periodic: Sequence[tuple[str, float, Callable[[], Awaitable[Any]]]] = (),
    ) -> None:
        self.settings = settings
        self.run_pass = run_pass
        self.load_tenants = load_tenants
        self.resources = list(resources)
        self.notifier = notifier or Notifier(env={})
        self.metrics = metrics
        self.write_state = write_state
        self.budgets = budgets
        self.monotonic = monotonic
        self.heartbeat_s = heartbeat_s
        self.state_every_s = state_every_s
        self.periodic = list(periodic)
        self.on_reload: Callable[[], None] | None = None
        """Called on SIGHUP before the tenants are re-read (the real daemon reloads its keyring)."""
        self.replica = settings.daemon.replica_id or f"{socket.gethostname()}:{os.getpid()}"

        self.scheduler: AsyncIOScheduler | None = None
        self.tenants: dict[int, Any] = {}
        self._versions: dict[int, tuple[Any, ...]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pass_stops: dict[asyncio.Task[Any], tuple[int, asyncio.Event]] = {}
        self._tenant_locks: dict[int, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(settings.daemon.max_concurrent_passes)
        self._stop_requested = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._force = False
        self._stopping = False
        self._refresh_lock = asyncio.Lock()
        self.running_passes = 0
        self._failing: dict[tuple[str, str], str] = {}
        """Latest error per (tenant, resource) still failing (cleared by a success), oldest first."""
        self.last_heartbeat = monotonic()
        self.last_state_ok: float | None = None
        self.results: list[Any] = []
        """Recent pass results (the last 1000)."""
        self.passes_done = 0
        self.passes_failed = 0
        """Failed passes (``run --once`` exits 1 if any)."""
        self.passes_interrupted = 0
        """Passes stopped by a signal (``run --once`` exits 75 if any and none failed, like ``sync``)."""
        self.started_ms = int(time.time() * 1000)
        self._budget_samples: dict[str, deque[tuple[float, int]]] = {}
        self._last_budget_sample: float | None = None

    # --- signals and health ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (a second request skips the rest of the drain)."""
        if self._stop_requested.is_set():
            self._force = True
            log(logger, "daemon.stop_forced", logging.WARNING)
        self._stop_requested.set()

    def request_reload(self) -> None:
        """Re-read the tenants soon (SIGHUP)."""
        self._reload_requested.set()

    def healthy(self) -> tuple[bool, str]:
        """Alive when the scheduler ticked recently and the last DB write is recent (``/healthz``)."""
        age = self.monotonic() - self.last_heartbeat
        if age > STALE_AFTER_S:
            return False, f"scheduler loop stalled for {age:.0f} s"
        if self.write_state is not None:
            if self.last_state_ok is None:
                return False, "database not reached yet"
            db_age = self.monotonic() - self.last_state_ok
            if db_age > max(3 * self.state_every_s, STALE_AFTER_S):
                return False, f"database unreachable for {db_age:.0f} s"
        return True, "ok"

    @property
    def last_error(self) -> str | None:
        """The most recent error of a (tenant, resource) whose last pass failed, or None."""
        return next(reversed(self._failing.values()), None)

    def summary(self) -> str:
        """The one-line STATUS= for systemd."""
        failing = f"{len(self._failing)} failing, " if self._failing else ""
        return (
            f"{len(self.tenants)} tenants, {self.running_passes} passes running, {failing}"
            f"last error: {self.last_error or 'none'}"
        )

    # --- the serving loop -----------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean drain."""
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        still_running = _StillRunningFilter()
        logging.getLogger("apscheduler.scheduler").addFilter(still_running)
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler = scheduler
        helpers: list[asyncio.Task[Any]] = []
        try:
            await self.refresh_tenants()
            scheduler.add_job(
                self._heartbeat,
                IntervalTrigger(seconds=self.heartbeat_s, timezone=UTC),
                id="daemon:heartbeat",
            )
            scheduler.add_job(
                self.refresh_tenants,
                IntervalTrigger(seconds=self.settings.schedule.tenant_refresh_s, timezone=UTC),
                id="daemon:tenant-refresh",
            )
            for name, every, fn in self.periodic:
                scheduler.add_job(
                    self._periodic_job,
                    IntervalTrigger(seconds=every, timezone=UTC),
                    args=(name, fn),
                    id=f"daemon:{name}",
                )
            scheduler.start()
            await self._write_state()
            helpers.append(asyncio.create_task(self._watchdog_loop(), name="clerk-sync-watchdog"))
            helpers.append(asyncio.create_task(self._state_loop(), name="clerk-sync-state"))
            helpers.append(asyncio.create_task(self._reload_loop(), name="clerk-sync-reload"))
            self.notifier.ready(self.summary())
            log(
                logger,
                "daemon.started",
                replica=self.replica,
                tenants=len(self.tenants),
                jobs=len(scheduler.get_jobs()),
            )
            await self._stop_requested.wait()
            await self._drain()
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if scheduler.running:
                scheduler.shutdown(wait=False)
            await self._write_state(stopped=True)
            for sig in installed:
                loop.remove_signal_handler(sig)
            logging.getLogger("apscheduler.scheduler").removeFilter(still_running)
            self.notifier.close()
        log(logger, "daemon.stopped", replica=self.replica)
        return 0

    async def run_once(self) -> int:
        """Run every (tenant, resource) once, in dependency order per tenant.

        Exit code as for ``sync``: 0 all succeeded (or were skipped: another process held the
        tenant), 1 a pass failed, 75 (EX_TEMPFAIL) interrupted by a signal, nothing failed.
        """
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        watcher = asyncio.create_task(self._stop_watcher(), name="clerk-sync-stop-watcher")
        try:
            await self.refresh_tenants(schedule=False)
            tasks = [
                self._spawn(tenant, resource, "incremental")
                for tenant in self.tenants.values()
                for resource in self.resources
            ]
            if tasks:
                await asyncio.wait(tasks)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for sig in installed:
                loop.remove_signal_handler(sig)
        ok = self.passes_failed == 0 and self.passes_interrupted == 0
        log(logger, "daemon.once_done", tenants=len(self.tenants), passes=self.passes_done, ok=ok)
        if self.passes_failed:
            return 1
        return EXIT_TEMPFAIL if self.passes_interrupted else 0

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
                continue
            installed.append(sig)
        return installed

    async def _stop_watcher(self) -> None:
        await self._stop_requested.wait()
        self._stop_all_passes()

    async def _drain(self) -> None:
        self._stopping = True
        assert self.scheduler is not None
        self.scheduler.pause()
        self._stop_all_passes()
        in_flight = len(self._tasks)
        self.notifier.stopping(f"draining {in_flight} passes")
        log(logger, "daemon.stopping", passes_in_flight=in_flight)
        deadline = self.monotonic() + self.settings.daemon.shutdown_timeout_s
        while self._tasks and not self._force:
            left = deadline - self.monotonic()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=min(left, 0.5))
        if self._tasks:
            log(logger, "daemon.drain_timeout", logging.WARNING, passes_cancelled=len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(set(self._tasks), timeout=2)

    def _stop_all_passes(self) -> None:
        for _, stop in self._pass_stops.values():
            stop.set()

    # --- tenants and jobs -----------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            log(logger, "daemon.reload")
            if self.on_reload is not None:
                self.on_reload()
            await self.refresh_tenants()

    async def refresh_tenants(self, schedule: bool = True) -> None:
        """Bring jobs in line with the tenants table: add new, drop gone, reschedule changed tenants."""
        if self._stopping:
            return
        async with self._refresh_lock:
            try:
                current = {int(t.id): t for t in await self.load_tenants() if t.id is not None}
            except Exception as exc:  # keep serving the tenants we know; try again next time
                log(logger, "daemon.tenants_unavailable", logging.WARNING, error=_one_line(exc))
                return
            added = [tid for tid in current if tid not in self.tenants]
            removed = [tid for tid in self.tenants if tid not in current]
            changed = [
                tid
                for tid in current
                if tid in self.tenants and tenant_version(current[tid]) != self._versions[tid]
            ]
            for tid in removed + changed:
                self._unschedule(tid)
            for tid in removed:  # a disabled or removed tenant's pass stops at its next page
                for _, (ptid, stop) in self._pass_stops.items():
                    if ptid == tid:
                        stop.set()
            for tid in removed:
                gone = self.tenants.pop(tid).name
                del self._versions[tid]
                for key in [k for k in self._failing if k[0] == gone]:
                    del self._failing[key]
            for tid in added + changed:
                self.tenants[tid] = current[tid]
                self._versions[tid] = tenant_version(current[tid])
                if schedule and self.scheduler is not None:
                    self._schedule(current[tid])
            if added or removed or changed:
                log(
                    logger,
                    "daemon.tenants",
                    tenants=len(self.tenants),
                    added=len(added),
                    removed=len(removed),
                    changed=len(changed),
                )
                if self.metrics is not None:
                    self.metrics.tenants.set(len(self.tenants))

    def _job_id(self, tenant_id: int, resource: str, mode: str) -> str:
        return f"{mode}:{tenant_id}:{resource}"

    def _schedule(self, tenant: Any) -> None:
        assert self.scheduler is not None
        jitter = self.settings.schedule.jitter_s or None
        for resource in self.resources:
            for mode in MODES:
                every = interval_s(resource, mode, self.settings.schedule)
                offset = stagger_fraction(tenant.name, resource.name, mode) * every
                self.scheduler.add_job(
                    self._job,
                    IntervalTrigger(
                        seconds=every,
                        start_date=SLOT_ANCHOR + timedelta(seconds=offset),
                        jitter=jitter,
                        timezone=UTC,
                    ),
                    args=(int(tenant.id), resource.name, mode),
                    id=self._job_id(int(tenant.id), resource.name, mode),
                    name=f"{tenant.name}/{resource.name}/{mode}",
                    replace_existing=True,
                )

    def _unschedule(self, tenant_id: int) -> None:
        if self.scheduler is None:
            return
        for resource in self.resources:
            for mode in MODES:
                with contextlib.suppress(Exception):  # JobLookupError: never scheduled
                    self.scheduler.remove_job(self._job_id(tenant_id, resource.name, mode))

    async def _job(self, tenant_id: int, resource_name: str, mode: str) -> None:
        """What APScheduler runs: start our own task and wait for it, shielded from the executor."""
        tenant = self.tenants.get(tenant_id)
        resource = next((r for r in self.resources if r.name == resource_name), None)
        if self._stopping or tenant is None or resource is None:
            return
        task = self._spawn(tenant, resource, mode)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _periodic_job(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        """A non-pass job (delivery): tracked and drained like passes, its errors logged."""
        if self._stopping:
            return

        async def guarded() -> None:
            try:
                await fn()
            except Exception as exc:
                log(logger, "daemon.job_failed", logging.WARNING, job=name, error=_one_line(exc))

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def _spawn(self, tenant: Any, resource: Resource, mode: str) -> asyncio.Task[Any]:
        stop = asyncio.Event()
        if self._stop_requested.is_set():
            stop.set()
        task = asyncio.create_task(
            self._run_one(tenant, resource, mode, stop), name=f"pass:{tenant.name}:{resource.name}:{mode}"
        )
        self._tasks.add(task)
        self._pass_stops[task] = (int(tenant.id), stop)

        def _done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._pass_stops.pop(t, None)

        task.add_done_callback(_done)
        return task

    async def _run_one(self, tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> None:
        lock = self._tenant_locks.setdefault(int(tenant.id), asyncio.Lock())
        async with lock, self._slots:
            if stop.is_set():
                return
            self.running_passes += 1
            self._update_running()
            try:
                results = list(await self.run_pass(tenant, resource, mode, stop))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one tenant's failure reach the scheduler
                log(
                    logger,
                    "daemon.pass_crashed",
                    logging.ERROR,
                    tenant=tenant.name,
                    resource=resource.name,
                    mode=mode,
                    error=_one_line(exc),
                )
                results = [PassResult(tenant.name, resource.name, mode, "failed", error=_one_line(exc))]
            finally:
                self.running_passes -= 1
                self._update_running()
        self._record(tenant, results)

    def _update_running(self) -> None:
        if self.metrics is not None:
            self.metrics.passes_running.set(self.running_passes)

    def _record(self, tenant: Any, results: Sequence[Any]) -> None:
        finished_s = time.time()
        for r in results:
            self.results.append(r)
            status = getattr(r, "status", "failed")
            self.passes_done += 1
            if status == "interrupted":
                self.passes_interrupted += 1
            elif status not in ("ok", "skipped"):
                self.passes_failed += 1
            key = (str(tenant.name), str(getattr(r, "resource", "?")))
            if status == "failed":
                self._failing.pop(key, None)  # re-insert: most recent last
                self._failing[key] = f"{key[0]}/{key[1]}: {getattr(r, 'error', '') or 'failed'}"
            elif status == "ok":
                self._failing.pop(key, None)
            if self.metrics is not None:
                self.metrics.observe_pass(r, finished_s)
        del self.results[:-1000]
        self.notifier.status(self.summary())

    # --- heartbeat, watchdog, state --------------------------------------------------------

    async def _heartbeat(self) -> None:
        self.last_heartbeat = self.monotonic()
        if self.metrics is not None:
            self.metrics.heartbeat.set(time.time())

    async def _watchdog_loop(self) -> None:
        every = self.notifier.watchdog_s
        if every is None:
            return
        while True:
            self.watchdog_tick()
            await asyncio.sleep(every)

    def watchdog_tick(self) -> bool:
        """Ping systemd's watchdog, unless the scheduler's heartbeat is stale (then systemd restarts us)."""
        if self.monotonic() - self.last_heartbeat > STALE_AFTER_S:
            log(logger, "daemon.watchdog_withheld", logging.WARNING)
            return False
        return self.notifier.watchdog()

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state_every_s)
            await self._write_state()

    def snapshot(self, stopped: bool = False) -> dict[str, Any]:
        """What ``clerk-sync status`` shows of this replica: next runs, passes running, budgets."""
        next_runs: dict[str, int] = {}
        if self.scheduler is not None and not stopped:
            for job in self.scheduler.get_jobs():
                when = getattr(job, "next_run_time", None)
                if job.id.startswith(MODES) and when is not None:
                    next_runs[job.id] = int(when.timestamp() * 1000)
        budgets = self._sample_budgets()
        return {
            "replica": self.replica,
            "pid": os.getpid(),
            "started_ms": self.started_ms,
            "stopped": stopped,
            "tenants": len(self.tenants),
            "running": sorted(t.get_name() for t in self._tasks),
            "last_error": self.last_error,
            "next_runs": next_runs,
            "budgets": budgets,
        }

    def _sample_budgets(self) -> dict[str, dict[str, int]]:
        """Per instance: requests in the last 10 s and, summed from samples, in the last minute.

        A budget's log only remembers one window, so the minute is built here from consecutive
        samples of "requests since the previous sample" (each at most 10 s apart).
        """
        if self.budgets is None:
            return {}
        now = self.monotonic()
        since = 10.0 if self._last_budget_sample is None else min(10.0, now - self._last_budget_sample)
        self._last_budget_sample = now
        out: dict[str, dict[str, int]] = {}
        window = {iid: (used, cap) for iid, used, cap in self.budgets(10.0)}
        for iid, recent, _ in self.budgets(since):
            samples = self._budget_samples.setdefault(iid, deque())
            samples.append((now, recent))
            while samples and samples[0][0] <= now - 60:
                samples.popleft()
            used_10s, cap = window.get(iid, (recent, 0))
            out[iid] = {"used_10s": used_10s, "used_60s": sum(n for _, n in samples), "capacity_10s": cap}
        return out

    async def _write_state(self, stopped: bool = False) -> None:
        if self.write_state is None:
            return
        try:
            await self.write_state(self.snapshot(stopped))
        except Exception as exc:
            log(logger, "daemon.state_write_failed", logging.WARNING, error=_one_line(exc))
            return
        self.last_state_ok = self.monotonic()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- wiring: the real engine, database, keyring, budgets, metrics and systemd ---------------------


async def serve(
    settings: Settings,
    *,
    once: bool = False,
    env: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """``clerk-sync run``: open everything, serve (or run once), close everything; the exit code."""
    from clerk_sync.clerk.budget import BudgetRegistry, InstanceBudget
    from clerk_sync.metrics import MetricsServer
    from clerk_sync.store import ops
    from clerk_sync.store.db import open_database
    from clerk_sync.store.tenants import TenantStore
    from clerk_sync.sync import SyncContext, run_pass
    from clerk_sync.vault import load_keyring

    env = os.environ if env is None else env

    class TrackingRegistry(BudgetRegistry):
        """The process-wide budgets, remembering which instances exist (for metrics and status)."""

        def __init__(self) -> None:
            super().__init__(settings.rate)
            self.known: dict[str, InstanceBudget] = {}

        def for_instance(self, instance_id: str, environment: str) -> InstanceBudget:
            budget = super().for_instance(instance_id, environment)
            self.known[instance_id] = budget
            return budget

    db = await asyncio.to_thread(
        open_database,
        settings.database_url,
        busy_timeout_s=settings.database.busy_timeout_s,
        pool_size=settings.database.pool_size,
    )
    server: MetricsServer | None = None
    closers: list[Callable[[], Awaitable[None]]] = []
    try:

        @dataclasses.dataclass
        class ObservedContext(SyncContext):
            """Keeps each tenant's latest client, so a pass's answers by status and retries reach metrics."""

            clients: dict[int, Any] = dataclasses.field(default_factory=dict)

            def open_client(self, tenant: Any) -> Any:
                client = super().open_client(tenant)
                self.clients[int(tenant.id)] = client  # one pass per tenant at a time: no mix-up
                return client

        keyring = load_keyring(settings, env)
        budgets = TrackingRegistry()
        ctx = ObservedContext(settings, db, keyring, budgets, transport=transport, handlers=_pass_handlers())
        resources = [r for r in ALL if ctx.supports(r)]
        tenant_store = TenantStore(db)

        async def load_tenants() -> Sequence[Any]:
            return await asyncio.to_thread(tenant_store.active)

        async def one_pass(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[Any]:
            result = await run_pass(ctx, tenant, resource, mode, stop)  # type: ignore[arg-type]
            client = ctx.clients.pop(int(tenant.id), None)
            if client is not None:  # extra fields read by DaemonMetrics.observe_pass
                vars(result).update(by_status=dict(client.stats.by_status), retries=client.stats.retries)
            return [result]

        def budget_use(seconds: float) -> list[tuple[str, int, int]]:
            return [
                (iid, b.used_in_last(seconds), b.capacity_per_10s) for iid, b in list(budgets.known.items())
            ]

        metrics = DaemonMetrics() if settings.metrics.address else None
        periodic: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = []
        if settings.sinks and settings.daemon.deliver and not once:
            from clerk_sync.delivery.sinks import build_sinks
            from clerk_sync.delivery.worker import Deliverer

            deliverer = Deliverer(db, build_sinks(settings.sinks, dict(env)))
            closers.append(deliverer.aclose)
            periodic.append(("deliver", settings.daemon.deliver_interval_s, deliverer.deliver_once))
        if metrics is not None and not once:

            async def refresh_mirror_counts() -> None:
                def count() -> dict[tuple[int, str], int]:
                    with db.read() as conn:
                        return ops.mirrored_counts(conn)

                names = {tid: t.name for tid, t in daemon.tenants.items()}
                for (tid, resource_name), n in (await asyncio.to_thread(count)).items():
                    if tid in names:
                        metrics.objects_mirrored.labels(names[tid], resource_name).set(n)

            periodic.append(("mirror-counts", MIRROR_COUNTS_EVERY_S, refresh_mirror_counts))
        daemon = Daemon(
            settings,
            one_pass,
            load_tenants,
            resources=resources,
            notifier=Notifier(env) if not once else Notifier(env={}),
            metrics=metrics,
            budgets=budget_use,
            periodic=periodic,
        )

        async def write_state(state: dict[str, Any]) -> None:
            await asyncio.to_thread(ops.write_daemon_state, db, daemon.replica, state)

        def reload_keyring() -> None:
            try:
                ctx.keyring = load_keyring(settings, env)
            except Exception as exc:  # keep the keys we have; the log says why
                log(logger, "daemon.keyring_reload_failed", logging.ERROR, error=_one_line(exc))

        daemon.write_state = None if once else write_state
        daemon.on_reload = reload_keyring
        if metrics is not None and settings.metrics.address and not once:
            metrics.set_budget_source(budget_use)
            server = MetricsServer(settings.metrics.address, metrics, daemon.healthy)
            try:
                server.start()
            except OSError as exc:
                server = None
                raise ConfigError(
                    f"cannot listen on metrics.address {settings.metrics.address}: {exc.strerror or exc}"
                ) from None
        return await (daemon.run_once() if once else daemon.run())
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
        if server is not None:
            server.stop()
        db.dispose()


def _pass_handlers() -> dict[str, Any]:
    """Passes for resources the generic walker cannot do (sessions), when the engine provides them."""
    try:
        from clerk_sync import sync
    except ImportError:  # pragma: no cover
        return {}
    factory = getattr(sync, "default_handlers", None)
    return dict(factory()) if callable(factory) else {}
