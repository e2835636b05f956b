"""``clerk-sync sync / backfill / events / demo`` as scripts see them (real subprocesses).

The simulator runs in this process on loopback; the CLI runs as a child with a config file that
points at it. The kill -9 test stops a child mid-pass and checks the rerun's outcome exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clerk_sync.simulator import SimulatedClerk, run_simulator
from clerk_sync.store import mirror, outbox
from clerk_sync.store.db import Database, open_database
from clerk_sync.store.tenants import InstanceInfo, TenantStore
from clerk_sync.vault import Keyring, MasterKey, SecretKey, write_master_key_file
from tests import webhook_schemas


@dataclass
class Env:
    sim: SimulatedClerk
    config: Path
    db: Database
    tenant_id: int

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clerk_sync", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "clerk_sync", "--config", str(self.config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_clean_env(),
        )

    def events(self) -> list[dict]:  # type: ignore[type-arg]
        with self.db.read() as conn:
            return [e.envelope() for _, e in outbox.read(conn, tenant_id=self.tenant_id, limit=1_000_000)]

    def live_users(self) -> int:
        with self.db.read() as conn:
            return mirror.count_live(conn, self.tenant_id, "users")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLERK_SYNC_")}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    sim = SimulatedClerk(seed=11, users=1500, orgs=5, limit_per_10s=100_000)
    with run_simulator(sim) as base_url:
        key_file = tmp_path / "master.key"
        master = MasterKey.generate()
        write_master_key_file(key_file, master)
        db_file = tmp_path / "state" / "clerk-sync.db"
        db_file.parent.mkdir(mode=0o700)
        config = tmp_path / "clerk-sync.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            f'[database]\nurl = "sqlite:///{db_file}"\n'
            f'[clerk]\napi_url = "{base_url}"\n'
            "[rate]\nlimit_per_10s = 100000\nshare = 1.0\n"
            "[http]\nretry_attempts = 2\n"
            "[sync]\npage_size = 100\n"
            f'[vault]\nmaster_key_file = "{key_file}"\n'
        )
        db = open_database(f"sqlite:///{db_file}")
        inst = sim.instance("sk_live_acme")
        tenant = TenantStore(db).create(
            "acme", SecretKey("sk_live_acme"), Keyring(master), InstanceInfo(inst.instance_id, "production")
        )
        assert tenant.id is not None
        try:
            yield Env(sim, config, db, tenant.id)
        finally:
            db.dispose()


def test_sync_then_events(env: Env) -> None:
    first = env.run("sync", "--resource", "users", "--resource", "organizations")
    assert first.returncode == 0, first.stderr
    assert "users" in first.stdout and "organizations" in first.stdout
    inst = env.sim.instance("sk_live_acme")
    uid = inst.user_ids()[7]
    inst.update_user(uid, first_name="Zed")
    gone = inst.user_ids()[9]
    inst.delete_user(gone)
    second = env.run("sync", "acme", "-r", "users")
    assert second.returncode == 0, second.stderr
    listed = env.run("events", "--json")
    assert listed.returncode == 0
    envelopes = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["type"], e["data"]["id"]) for e in envelopes] == [
        ("user.updated", uid),
        ("user.deleted", gone),
    ]
    for e in envelopes:
        webhook_schemas.validate_if_available(e)
    only = env.run("events", "--tenant", "acme", "--type", "user.deleted", "--after", "0")
    assert only.returncode == 0 and gone in only.stdout and uid not in only.stdout
    after = env.run("events", "--after", "1", "--json")
    assert [json.loads(x)["type"] for x in after.stdout.splitlines()] == ["user.deleted"]
    one = env.run("events", "--limit", "1", "--json")
    assert [json.loads(x)["type"] for x in one.stdout.splitlines()] == ["user.updated"]
    for bad in (["--limit", "-5"], ["--limit", "0"], ["--after", "-1"]):
        refused = env.run("events", *bad)  # not "every event" (SQLite reads LIMIT -5 as no limit)
        assert refused.returncode == 2 and not refused.stdout, (bad, refused.stdout)


def test_backfill_logs_one_line_per_pass_and_exits_0(env: Env) -> None:
    result = env.run(
        "--log-format",
        "json",
        "backfill",
        "-r",
        "users",
        "-r",
        "organizations",
        "-r",
        "invitations",
        "-r",
        "organization_memberships",
    )
    assert result.returncode == 0, result.stderr
    passes = [json.loads(line) for line in result.stderr.splitlines() if '"sync.pass"' in line]
    assert {p["resource"] for p in passes} >= {
        "users",
        "organizations",
        "organization_memberships",
        "invitations",
    }
    assert all(p["result"] == "ok" and p["mode"] == "full" for p in passes)


def test_sync_exits_1_when_a_pass_fails(env: Env) -> None:
    env.sim.instance("sk_live_acme").revoke_key()
    result = env.run("sync", "-r", "users")
    assert result.returncode == 1
    assert "sk_live_acme" not in result.stderr + result.stdout
    unknown = env.run("sync", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr


@pytest.mark.slow
def test_kill_9_mid_pass_then_rerun_loses_and_duplicates_nothing(env: Env) -> None:
    assert env.run("sync", "--full", "-r", "users").returncode == 0  # silent baseline
    inst = env.sim.instance("sk_live_acme")
    ids = inst.user_ids()
    updated = [ids[i] for i in (50, 400, 900, 1400)]
    deleted = [ids[i] for i in (60, 1200)]
    for uid in updated:
        inst.update_user(uid, last_name="Killed")
    for uid in deleted:
        inst.delete_user(uid)
    created = [inst.create_user(first_name=f"K{i}")["id"] for i in range(3)]
    env.sim.inject("slow", count=1000, path_prefix="/users", delay_s=0.15)
    child = env.popen("sync", "--full", "-r", "users")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with env.db.read() as conn:
            from sqlalchemy import text

            pages = (
                conn.execute(text("SELECT max(pages) FROM sync_run WHERE status = 'running'")).scalar() or 0
            )
        if pages >= 5:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    mid = env.events()
    assert 0 < pages < 15  # killed mid-pass (15 pages in all)
    env.sim.clear_faults()
    rerun = env.run("sync", "--full", "-r", "users")
    assert rerun.returncode == 0, rerun.stderr
    events = env.events()
    got = Counter((e["type"], e["data"]["id"]) for e in events)
    expected = Counter(
        [("user.updated", u) for u in updated]
        + [("user.deleted", u) for u in deleted]
        + [("user.created", u) for u in created]
    )
    assert got == expected
    assert len({e["clerk_sync"]["event_id"] for e in events}) == len(events)
    assert [e["clerk_sync"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[: len(mid)] == mid
    assert env.live_users() == len(inst.user_ids())
    # the rerun resumed the killed pass instead of starting over
    with env.db.read() as conn:
        from sqlalchemy import text

        rows = conn.execute(text("SELECT status, pass_id FROM sync_run ORDER BY id")).all()
    assert rows[-2][0] == "interrupted" and rows[-1] == ("ok", rows[-2][1])


@pytest.mark.slow
def test_demo_runs_offline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clerk_sync", "demo", "--users", "300", "--state-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "user.created" in result.stdout and "user.deleted" in result.stdout
    assert "organizationMembership.created" in result.stdout and "invitation.created" in result.stdout
    assert "2 session.created" in result.stdout
    assert "sk_live_demo" not in result.stdout + result.stderr
    assert (tmp_path / "demo" / "master.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "demo" / "clerk-sync.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_deliver_follow_stops_cleanly_on_a_signal(env: Env, tmp_path: Path, sig: signal.Signals) -> None:
    # `deliver --follow` is documented as a service of its own: `systemctl stop` must end it with 0,
    # after the round in flight, not kill it mid-delivery.
    out = tmp_path / "events.jsonl"
    env.config.write_text(env.config.read_text() + f'[[sinks]]\nkind = "jsonl"\nname = "f"\npath = "{out}"\n')
    assert env.run("sync", "-r", "users").returncode == 0
    inst = env.sim.instance("sk_live_acme")
    inst.update_user(inst.user_ids()[3], first_name="Sig")
    assert env.run("sync", "-r", "users").returncode == 0
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clerk_sync",
            "--config",
            str(env.config),
            "deliver",
            "--follow",
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as on a terminal
    )
    assert child.stderr is not None
    first = child.stderr.readline()  # the first round delivered the event
    assert first.startswith("delivered=1 "), first
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "Traceback" not in err and "delivered=" not in err  # idle rounds print nothing
    assert [json.loads(line)["type"] for line in out.read_text().splitlines()] == ["user.updated"]


def _run_on_a_terminal(env: Env, *args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as a person at a shell would."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clerk_sync", "--config", str(env.config), *args],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env={**_clean_env(), "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_sync_prints_a_table_and_backfill_a_progress_bar(env: Env) -> None:
    code, screen = _run_on_a_terminal(env, "sync", "--resource", "users")
    assert code == 0, screen
    assert "┃" in screen and "objects" in screen  # the rich table (box drawing), not log lines
    assert "acme" in screen and "users" in screen
    assert '{"ts"' not in screen  # no JSON log lines on a terminal

    code, screen = _run_on_a_terminal(env, "backfill", "--resource", "users")
    assert code == 0, screen
    assert "acme/users ok" in screen  # the progress bar's description after the pass
    assert "100%" in screen
