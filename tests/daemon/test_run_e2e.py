"""``clerk-sync run`` as a subprocess against the simulator: passes, events, SIGTERM mid-pass, restart."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from clerk_sync.simulator import SimulatedClerk, run_simulator
from clerk_sync.store.db import Database, open_database
from clerk_sync.store.models import MirrorObject, OutboxEvent, SyncRun
from clerk_sync.store.tenants import InstanceInfo, TenantStore
from clerk_sync.vault import Keyring, MasterKey, SecretKey, write_master_key_file

pytestmark = pytest.mark.slow

TENANTS = {"acme": "sk_live_acme", "beta": "sk_test_beta", "gamma": "sk_live_gamma"}
USERS = 80
RUNS = SyncRun.__table__  # type: ignore[attr-defined]
MIRROR = MirrorObject.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]


def config_text(tmp: Path, base_url: str, metrics_port: int = 0, db_url: str | None = None) -> str:
    db_url = db_url or f"sqlite:///{tmp / 'clerk-sync.db'}"
    return f"""
state_dir = "{tmp}"
[database]
url = "{db_url}"
[clerk]
api_url = "{base_url}"
[vault]
master_key_file = "{tmp / "master.key"}"
[sync]
page_size = 20
[sessions]
max_requests_per_pass = 15
[events]
initial = "created"
[http]
retry_attempts = 3
[schedule]
users_incremental_s = 1
organizations_s = 2
organization_memberships_s = 2
invitations_s = 2
sessions_s = 2
full_pass_s = 3
jitter_s = 0.2
tenant_refresh_s = 1
[daemon]
shutdown_timeout_s = 5
[metrics]
address = "127.0.0.1:{metrics_port}"
[[sinks]]
kind = "jsonl"
name = "file"
path = "{tmp / "events.jsonl"}"
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[SimulatedClerk, Path, Database]]:
    sim = SimulatedClerk(seed=3, users=USERS, orgs=3)
    with run_simulator(sim) as base_url:
        key = MasterKey.generate()
        write_master_key_file(tmp_path / "master.key", key)
        cfg = tmp_path / "clerk-sync.toml"
        cfg.write_text(config_text(tmp_path, base_url, free_port()))
        db = open_database(f"sqlite:///{tmp_path / 'clerk-sync.db'}")
        store = TenantStore(db)
        for name, secret in TENANTS.items():
            inst = sim.instance(secret)
            store.create(
                name, SecretKey(secret), Keyring(key), InstanceInfo(inst.instance_id, inst.environment)
            )
        try:
            yield sim, cfg, db
        finally:
            db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cfg: Path, log: Path, notify_socket: str | None = None) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CLERK_SYNC_CONFIG")
    }
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
        env["WATCHDOG_USEC"] = "2000000"
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "clerk_sync", "--config", str(cfg), "--log-format", "json", "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def wait_for(cond: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"condition not met in {timeout} s:\n{log.read_text()[-3000:]}")


def runs(db: Database, **where: Any) -> list[Any]:
    q = select(RUNS)
    for k, v in where.items():
        q = q.where(RUNS.c[k] == v)
    with db.read() as conn:
        return list(conn.execute(q.order_by(RUNS.c.id)))


def users_consistent(db: Database) -> tuple[int, int]:
    """(live mirrored users, user.created events): committed together, so always equal."""
    with db.read() as conn:
        mirrored = conn.execute(
            select(func.count()).where(MIRROR.c.resource == "users", MIRROR.c.deleted_ms.is_(None))
        ).scalar_one()
        created = conn.execute(select(func.count()).where(OUTBOX.c.type == "user.created")).scalar_one()
    return int(mirrored), int(created)


def test_daemon_syncs_stops_mid_pass_and_resumes(
    world: tuple[SimulatedClerk, Path, Database], tmp_path: Path
) -> None:
    sim, cfg, db = world
    log = tmp_path / "daemon.log"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify.sock"))
    systemd.settimeout(0.2)
    notes: list[str] = []
    reading = threading.Event()
    reading.set()

    def read_notes() -> None:  # like systemd: read promptly, so the queue never fills
        while reading.is_set():
            with contextlib.suppress(TimeoutError):
                notes.append(systemd.recv(4096).decode())

    reader = threading.Thread(target=read_notes, daemon=True)
    reader.start()
    proc = start(cfg, log, notify_socket=str(tmp_path / "notify.sock"))
    try:
        # Every tenant (production and development) gets its users mirrored, with events.
        def all_synced() -> bool:
            done = {r.tenant_id for r in runs(db, resource="users", status="ok")}
            return len(done) == len(TENANTS)

        wait_for(all_synced, proc, log)
        assert users_consistent(db) == (USERS * len(TENANTS), USERS * len(TENANTS))

        # Operations: /healthz, /metrics, and systemd's notify socket.
        port = int(re.search(r"address = \"127.0.0.1:(\d+)\"", cfg.read_text()).group(1))  # type: ignore[union-attr]
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'clerk_sync_passes_total{mode="full",resource="users",result="ok",tenant="beta"}' in metrics
        assert 'clerk_sync_requests_total{status="200",tenant="beta"}' in metrics
        assert 'clerk_sync_budget_utilisation_ratio{instance="ins_' in metrics

        # A change in Clerk becomes an event without any restart.
        new = sim.instance("sk_test_beta").create_user(first_name="Late")
        wait_for(lambda: _has_event(db, "user.created", new["id"]), proc, log)
        # ... and the daemon delivers it to the configured sink.
        events_file = tmp_path / "events.jsonl"
        wait_for(lambda: events_file.exists() and new["id"] in events_file.read_text(), proc, log)

        # Make acme's user pages slow, wait for a full users pass of acme to be mid-way, then SIGTERM.
        sim.inject("slow", count=10_000, path_prefix="/users", instance="sk_live_acme", delay_s=0.4)
        acme_id = TenantStore(db).get("acme").id

        def acme_full_in_flight() -> bool:
            return any(
                r.mode == "full" and r.cursor
                for r in runs(db, tenant_id=acme_id, resource="users", status="running")
            )

        wait_for(acme_full_in_flight, proc, log, timeout=25)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)  # let the reader take the last datagrams
    reading.clear()
    reader.join()
    systemd.close()
    kinds = [n.split("=", 1)[0] for n in notes]
    assert kinds[0] == "READY"
    assert kinds.count("READY") == 1
    assert "WATCHDOG" in kinds[: kinds.index("STOPPING")]  # READY, WATCHDOG…, then STOPPING
    assert any(n.startswith("STATUS=3 tenants") for n in notes)

    assert runs(db, status="running") == []
    interrupted = [r for r in runs(db, tenant_id=acme_id, resource="users", status="interrupted") if r.cursor]
    assert interrupted, log.read_text()[-3000:]
    mirrored, created = users_consistent(db)
    assert mirrored == created == USERS * len(TENANTS) + 1
    lines = log.read_text()
    assert '"event":"daemon.stopping"' in lines
    assert "sk_live_acme" not in lines and "sk_test_beta" not in lines

    # Restart: the interrupted full pass is resumed under the same pass id and finishes.
    sim.clear_faults()
    resumed_pass = interrupted[-1].pass_id
    proc = start(cfg, log)
    try:

        def resumed_ok() -> bool:
            return any(
                r.pass_id == resumed_pass and r.mode == "full"
                for r in runs(db, tenant_id=acme_id, resource="users", status="ok")
            )

        wait_for(resumed_ok, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert runs(db, status="running") == []
    mirrored, created = users_consistent(db)
    assert mirrored == created == USERS * len(TENANTS) + 1
    assert sim.stats()["non_get"] == 0


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  (loopback)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _has_event(db: Database, type_: str, object_id: str) -> bool:
    with db.read() as conn:
        return (
            conn.execute(
                select(OUTBOX.c.id).where(OUTBOX.c.type == type_, OUTBOX.c.object_id == object_id)
            ).first()
            is not None
        )


def test_run_once_exits_zero_after_syncing_everything(
    world: tuple[SimulatedClerk, Path, Database], tmp_path: Path
) -> None:
    _, cfg, db = world
    env = {k: v for k, v in os.environ.items() if k != "CLERK_SYNC_CONFIG"}
    proc = subprocess.run(
        [sys.executable, "-m", "clerk_sync", "--config", str(cfg), "--log-format", "json", "run", "--once"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert users_consistent(db) == (USERS * len(TENANTS), USERS * len(TENANTS))
    assert runs(db, status="running") == []
    status = subprocess.run(
        [sys.executable, "-m", "clerk_sync", "--config", str(cfg), "status"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr.decode()
    text = status.stdout.decode()
    for name in TENANTS:
        assert name in text
    assert str(USERS) in text


@pytest.mark.postgres
def test_two_replicas_on_postgresql_never_sync_a_tenant_twice_at_once(pg_url: str, tmp_path: Path) -> None:
    sim = SimulatedClerk(seed=4, users=USERS, orgs=3)
    with run_simulator(sim) as base_url:
        key = MasterKey.generate()
        write_master_key_file(tmp_path / "master.key", key)
        cfg = tmp_path / "clerk-sync.toml"
        text = config_text(tmp_path, base_url, 0, db_url=pg_url)
        cfg.write_text(text[: text.index("[[sinks]]")])  # two replicas: no shared JSONL file
        db = open_database(pg_url)
        try:
            store = TenantStore(db)
            for name, secret in TENANTS.items():
                inst = sim.instance(secret)
                store.create(
                    name, SecretKey(secret), Keyring(key), InstanceInfo(inst.instance_id, inst.environment)
                )
            logs = [tmp_path / "a.log", tmp_path / "b.log"]
            procs = [start(cfg, log) for log in logs]
            try:

                def every_tenant_twice() -> bool:
                    ok = [r.tenant_id for r in runs(db, resource="users", status="ok")]
                    return all(ok.count(t.id) >= 2 for t in store.list())

                wait_for(every_tenant_twice, procs[0], logs[0], timeout=30)
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                assert [proc.wait(timeout=15) for proc in procs] == [0, 0]
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            all_runs = runs(db)
            assert [r for r in all_runs if r.status == "running"] == []
            by_tenant: dict[int, list[Any]] = {}
            for r in all_runs:
                by_tenant.setdefault(r.tenant_id, []).append(r)
            for tenant_runs in by_tenant.values():
                spans = sorted((r.started_ms, r.finished_ms) for r in tenant_runs)
                for (_, end), (next_start, _) in itertools.pairwise(spans):
                    assert end <= next_start, "two passes of one tenant overlapped"
            mirrored, created = users_consistent(db)
            assert mirrored == created == USERS * len(TENANTS)
            assert sim.stats()["refused_429"] == 0
        finally:
            db.dispose()
