"""The scheduler with a fake pass runner: stagger, no overlap, isolation, reload, drain, notify."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from clerk_sync.config import DaemonSettings, ScheduleSettings, Settings
from clerk_sync.daemon import Daemon, interval_s, stagger_fraction
from clerk_sync.metrics import DaemonMetrics
from clerk_sync.notify import Notifier
from clerk_sync.resources import ALL, BY_NAME, USERS, Resource


@dataclasses.dataclass
class FakeTenant:
    id: int
    name: str
    key_id: str = "k1"
    updated_ms: int = 0


@dataclasses.dataclass
class FakeResult:
    tenant: str
    resource: str
    mode: str
    status: str = "ok"
    error: str | None = None
    requests: int = 1
    pages: int = 1
    objects: int = 1
    events: int = 0
    rate_limited: int = 0
    seconds: float = 0.0


FAST = ScheduleSettings(
    users_incremental_s=0.05,
    organizations_s=0.05,
    organization_memberships_s=0.05,
    invitations_s=0.05,
    sessions_s=0.05,
    full_pass_s=10_000_000,
    jitter_s=0,
    tenant_refresh_s=3600,
)


def settings(shutdown_timeout_s: float = 5.0, schedule: ScheduleSettings = FAST) -> Settings:
    return Settings().replace(schedule=schedule, daemon=DaemonSettings(shutdown_timeout_s=shutdown_timeout_s))


def loader(tenants: list[Any]) -> Callable[[], Awaitable[Sequence[Any]]]:
    async def load() -> Sequence[Any]:
        return list(tenants)

    return load


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition (the deadline only guards against a hung test)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def stop(daemon: Daemon, task: asyncio.Task[int]) -> int:
    daemon.request_stop()
    return await asyncio.wait_for(task, 15)


def test_intervals_come_from_the_schedule() -> None:
    s = ScheduleSettings()
    assert interval_s(BY_NAME["users"], "incremental", s) == 300
    assert interval_s(BY_NAME["organizations"], "incremental", s) == 900
    assert interval_s(BY_NAME["sessions"], "incremental", s) == 300
    assert interval_s(BY_NAME["users"], "full", s) == 86400


def test_hundred_tenants_are_spread_over_the_interval() -> None:
    names = [f"tenant{i}" for i in range(100)]
    fractions = [stagger_fraction(n, "users", "incremental") for n in names]
    assert fractions == [stagger_fraction(n, "users", "incremental") for n in names]  # stable across restarts
    buckets = Counter(int(f * 10) for f in fractions)
    assert len(buckets) == 10
    assert max(buckets.values()) <= 25  # ~10 expected per tenth; never a thundering herd
    assert stagger_fraction("t", "users", "incremental") != stagger_fraction("t", "users", "full")


async def test_jobs_run_late_once_and_never_overlap() -> None:
    tenants = [FakeTenant(i, f"t{i}") for i in range(1, 4)]
    daemon = Daemon(settings(schedule=ScheduleSettings()), _ok_runner([]), loader(tenants))
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.scheduler is not None and daemon.scheduler.running)
    assert daemon.scheduler is not None
    jobs = [j for j in daemon.scheduler.get_jobs() if not j.id.startswith("daemon:")]
    assert len(jobs) == 3 * len(ALL) * 2
    for job in jobs:
        assert job.max_instances == 1
        assert job.coalesce is True
        assert job.misfire_grace_time is None
    firsts = {j.next_run_time for j in jobs if j.id.startswith("incremental:") and j.id.endswith(":users")}
    assert len(firsts) == 3  # staggered
    assert await stop(daemon, task) == 0


def _ok_runner(calls: list[tuple[str, str, str]]) -> Any:
    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        calls.append((tenant.name, resource.name, mode))
        await asyncio.sleep(0)
        return [FakeResult(tenant.name, resource.name, mode)]

    return run


async def test_a_slow_tenant_neither_overlaps_itself_nor_delays_others() -> None:
    calls: Counter[str] = Counter()
    active: Counter[str] = Counter()
    overlaps: list[str] = []
    saw_stop: list[bool] = []

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        calls[tenant.name] += 1
        active[tenant.name] += 1
        if active[tenant.name] > 1:
            overlaps.append(tenant.name)
        try:
            if tenant.name == "slow":
                await stop.wait()  # a pass that only ends at shutdown
                saw_stop.append(True)
                return [FakeResult(tenant.name, resource.name, mode, status="interrupted")]
            await asyncio.sleep(0.01)
            return [FakeResult(tenant.name, resource.name, mode)]
        finally:
            active[tenant.name] -= 1

    daemon = Daemon(
        settings(), run, loader([FakeTenant(1, "slow"), FakeTenant(2, "fast")]), resources=[USERS]
    )
    task = asyncio.create_task(daemon.run())
    await until(lambda: calls["fast"] >= 8 and calls["slow"] >= 1)
    assert active["slow"] == 1
    assert await stop(daemon, task) == 0
    assert calls["slow"] == 1
    assert overlaps == []
    assert saw_stop == [True]
    assert daemon.running_passes == 0


async def test_a_failing_tenant_is_reported_and_others_continue() -> None:
    calls: Counter[str] = Counter()
    healthy: list[bool] = []

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        calls[tenant.name] += 1
        if tenant.name == "broken" and not healthy:
            raise RuntimeError("database is on fire")
        return [FakeResult(tenant.name, resource.name, mode)]

    daemon = Daemon(
        settings(), run, loader([FakeTenant(1, "broken"), FakeTenant(2, "fine")]), resources=[USERS]
    )
    task = asyncio.create_task(daemon.run())
    await until(lambda: calls["broken"] >= 3 and calls["fine"] >= 3)
    assert daemon.last_error == "broken/users: RuntimeError: database is on fire"
    assert daemon.summary().startswith("2 tenants, ")
    assert "1 failing, last error: broken/users: RuntimeError: database is on fire" in daemon.summary()
    repaired = calls["broken"]
    healthy.append(True)
    await until(lambda: calls["broken"] > repaired + 1)
    assert daemon.last_error is None  # a later success clears it
    assert daemon.summary().endswith("last error: none")
    assert await stop(daemon, task) == 0


async def test_drain_gives_up_at_the_deadline_and_still_exits_cleanly() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        started.set()
        try:
            await asyncio.sleep(3600)  # ignores the stop event
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return []

    daemon = Daemon(
        settings(shutdown_timeout_s=0.2), run, loader([FakeTenant(1, "stuck")]), resources=[USERS]
    )
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(started.wait(), 10)
    assert await stop(daemon, task) == 0
    assert cancelled == [True]
    assert daemon.scheduler is not None and not daemon.scheduler.running


async def test_no_pass_starts_after_stop() -> None:
    calls: list[tuple[str, str, str]] = []
    daemon = Daemon(settings(), _ok_runner(calls), loader([FakeTenant(1, "a")]), resources=[USERS])
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(calls) >= 2)
    assert await stop(daemon, task) == 0
    n = len(calls)
    await asyncio.sleep(0.2)
    assert len(calls) == n


async def test_reload_adds_removes_and_reschedules_rekeyed_tenants() -> None:
    seen: list[tuple[str, str]] = []

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        seen.append((tenant.name, tenant.key_id))
        return [FakeResult(tenant.name, resource.name, mode)]

    tenants: list[Any] = [FakeTenant(1, "a"), FakeTenant(2, "b")]
    daemon = Daemon(settings(), run, loader(tenants), resources=[USERS])
    task = asyncio.create_task(daemon.run())
    await until(lambda: {"a", "b"} <= {n for n, _ in seen})
    tenants[:] = [FakeTenant(2, "b", key_id="k2", updated_ms=5), FakeTenant(3, "c")]
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: ("c", "k1") in seen and ("b", "k2") in seen)
    assert set(daemon.tenants) == {2, 3}
    assert daemon.scheduler is not None
    assert {j.id for j in daemon.scheduler.get_jobs() if ":1:" in j.id} == set()
    count_a = sum(1 for n, _ in seen if n == "a")
    await asyncio.sleep(0.2)
    assert sum(1 for n, _ in seen if n == "a") == count_a
    assert await stop(daemon, task) == 0


async def test_tenants_table_unreadable_keeps_the_known_tenants() -> None:
    calls: list[tuple[str, str, str]] = []
    fail = False

    async def load() -> Sequence[Any]:
        if fail:
            raise RuntimeError("connection refused")
        return [FakeTenant(1, "a")]

    daemon = Daemon(settings(), _ok_runner(calls), load, resources=[USERS])
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(calls) >= 1)
    fail = True
    await daemon.refresh_tenants()
    assert set(daemon.tenants) == {1}
    assert await stop(daemon, task) == 0


async def test_sigterm_drains_and_returns_zero() -> None:
    in_pass = asyncio.Event()

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        in_pass.set()
        await stop.wait()
        return [FakeResult(tenant.name, resource.name, mode, status="interrupted")]

    daemon = Daemon(settings(), run, loader([FakeTenant(1, "a")]), resources=[USERS])
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(in_pass.wait(), 10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 15) == 0
    assert [r.status for r in daemon.results] == ["interrupted"]


async def test_run_once_runs_every_job_once_in_dependency_order() -> None:
    calls: list[tuple[str, str, str]] = []
    daemon = Daemon(settings(), _ok_runner(calls), loader([FakeTenant(1, "a"), FakeTenant(2, "b")]))
    assert await daemon.run_once() == 0
    assert sorted(calls) == sorted((t, r.name, "incremental") for t in ("a", "b") for r in ALL)
    assert [r for t, r, _ in calls if t == "a"] == [r.name for r in ALL]


@pytest.mark.parametrize(("status", "code"), [("ok", 0), ("skipped", 0), ("failed", 1), ("interrupted", 75)])
async def test_run_once_exit_code(status: str, code: int) -> None:
    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        s = status if tenant.name == "b" else "ok"
        return [FakeResult(tenant.name, resource.name, mode, status=s)]

    daemon = Daemon(settings(), run, loader([FakeTenant(1, "a"), FakeTenant(2, "b")]), resources=[USERS])
    assert await daemon.run_once() == code


async def test_run_once_with_a_crashing_runner_fails() -> None:
    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        raise RuntimeError("nope")

    daemon = Daemon(settings(), run, loader([FakeTenant(1, "a")]), resources=[USERS])
    assert await daemon.run_once() == 1


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Any:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def drain_datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_notify_ready_status_watchdog_stopping_in_order(systemd_socket: Any) -> None:
    sock, path = systemd_socket
    calls: list[tuple[str, str, str]] = []
    notifier = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    daemon = Daemon(
        settings(), _ok_runner(calls), loader([FakeTenant(1, "a")]), resources=[USERS], notifier=notifier
    )
    task = asyncio.create_task(daemon.run())
    got: list[str] = []

    def have(prefix: str) -> bool:
        got.extend(drain_datagrams(sock))
        return any(m.startswith(prefix) for m in got)

    await until(lambda: have("WATCHDOG=1") and have("STATUS=1 tenants"))
    assert await stop(daemon, task) == 0
    got.extend(drain_datagrams(sock))
    kinds = [m.split("=", 1)[0] for m in got]
    assert kinds[0] == "READY"
    assert kinds.count("READY") == 1
    assert "WATCHDOG" in kinds[: kinds.index("STOPPING")]
    assert set(kinds[kinds.index("STOPPING") :]) <= {"STOPPING", "STATUS", "WATCHDOG"}
    assert "STATUS=1 tenants, 0 passes running, last error: none" in got


async def test_watchdog_is_withheld_when_the_loop_is_stale(systemd_socket: Any) -> None:
    sock, path = systemd_socket
    clock = [100.0]
    daemon = Daemon(
        settings(),
        _ok_runner([]),
        loader([]),
        notifier=Notifier(env={"NOTIFY_SOCKET": path}),
        monotonic=lambda: clock[0],
    )
    assert daemon.watchdog_tick()
    assert drain_datagrams(sock) == ["WATCHDOG=1"]
    clock[0] += 60
    assert not daemon.watchdog_tick()
    assert drain_datagrams(sock) == []
    assert daemon.healthy() == (False, "scheduler loop stalled for 60 s")
    daemon.notifier.close()


async def test_health_needs_the_database() -> None:
    broken = True

    async def write_state(state: dict[str, Any]) -> None:
        if broken:
            raise RuntimeError("could not connect to server")

    daemon = Daemon(settings(), _ok_runner([]), loader([]), write_state=write_state, state_every_s=0.05)
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.scheduler is not None and daemon.scheduler.running)
    assert daemon.healthy() == (False, "database not reached yet")
    broken = False
    await until(lambda: daemon.healthy()[0])
    assert await stop(daemon, task) == 0


async def test_state_snapshot_lists_next_runs_and_budgets() -> None:
    states: list[dict[str, Any]] = []

    async def write_state(state: dict[str, Any]) -> None:
        states.append(state)

    daemon = Daemon(
        settings(schedule=ScheduleSettings()),
        _ok_runner([]),
        loader([FakeTenant(7, "a")]),
        write_state=write_state,
        budgets=lambda seconds: [("ins_1", 3, 500)],
        metrics=DaemonMetrics(),
    )
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(states) >= 1)
    assert await stop(daemon, task) == 0
    first = states[0]
    assert set(first["next_runs"]) == {f"{m}:7:{r.name}" for r in ALL for m in ("incremental", "full")}
    assert first["budgets"] == {"ins_1": {"used_10s": 3, "used_60s": 3, "capacity_10s": 500}}
    assert states[-1]["stopped"] is True


async def test_periodic_jobs_run_and_are_drained_not_cancelled() -> None:
    rounds: list[str] = []
    release = asyncio.Event()

    async def deliver() -> None:
        rounds.append("start")
        if rounds.count("start") == 3:  # the third round is in flight when the stop comes
            await release.wait()
        rounds.append("end")

    daemon = Daemon(settings(), _ok_runner([]), loader([]), periodic=[("deliver", 0.05, deliver)])
    task = asyncio.create_task(daemon.run())
    await until(lambda: rounds.count("start") == 3)
    daemon.request_stop()
    await asyncio.sleep(0.1)
    assert not task.done()  # waiting for the round in flight
    release.set()
    assert await asyncio.wait_for(task, 15) == 0
    assert rounds[-1] == "end"
    assert rounds.count("start") == rounds.count("end")


async def test_a_failing_periodic_job_keeps_running() -> None:
    calls: list[int] = []

    async def deliver() -> None:
        calls.append(1)
        raise ConnectionError("webhook receiver down")

    daemon = Daemon(settings(), _ok_runner([]), loader([]), periodic=[("deliver", 0.05, deliver)])
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(calls) >= 3)
    assert await stop(daemon, task) == 0


async def test_sighup_calls_the_reload_hook_before_rereading_tenants() -> None:
    order: list[str] = []
    tenants: list[Any] = [FakeTenant(1, "a")]

    async def load() -> Sequence[Any]:
        order.append("tenants")
        return list(tenants)

    daemon = Daemon(settings(), _ok_runner([]), load, resources=[USERS])
    daemon.on_reload = lambda: order.append("keyring")
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.scheduler is not None and daemon.scheduler.running)
    order.clear()
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: "tenants" in order)
    assert order[:2] == ["keyring", "tenants"]
    assert await stop(daemon, task) == 0


async def test_disabling_a_tenant_stops_its_pass_in_flight() -> None:
    in_pass = asyncio.Event()
    stopped: list[str] = []

    async def run(tenant: Any, resource: Resource, mode: str, stop: asyncio.Event) -> list[FakeResult]:
        if tenant.name == "a":
            in_pass.set()
            await stop.wait()
            stopped.append(tenant.name)
            return [FakeResult(tenant.name, resource.name, mode, status="interrupted")]
        return [FakeResult(tenant.name, resource.name, mode)]

    tenants: list[Any] = [FakeTenant(1, "a"), FakeTenant(2, "b")]
    daemon = Daemon(settings(), run, loader(tenants), resources=[USERS])
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(in_pass.wait(), 10)
    tenants[:] = [FakeTenant(2, "b")]
    await daemon.refresh_tenants()
    await until(lambda: stopped == ["a"])
    assert not task.done()
    assert await stop(daemon, task) == 0


async def test_a_restart_keeps_every_job_in_its_slot() -> None:
    schedule = dataclasses.replace(ScheduleSettings(), jitter_s=0)

    async def next_runs() -> dict[str, Any]:
        daemon = Daemon(settings(schedule=schedule), _ok_runner([]), loader([FakeTenant(1, "acme")]))
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.scheduler is not None and daemon.scheduler.running)
        assert daemon.scheduler is not None
        runs = {j.id: j.next_run_time for j in daemon.scheduler.get_jobs() if not j.id.startswith("daemon:")}
        assert await stop(daemon, task) == 0
        return runs

    first = await next_runs()
    await asyncio.sleep(0.05)
    second = await next_runs()
    assert first == second  # the daily full pass keeps its hour however often the daemon restarts
    assert len(first) == 2 * len(ALL)
