"""``clerk-sync status`` from the database alone (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert

from clerk_sync.config import Settings, SinkSettings
from clerk_sync.status import build_status, render_text
from clerk_sync.store import ops, runs
from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import MirrorObject, OutboxEvent, SinkCursor
from tests import factories

NOW = 1_800_000_000_000


def add_tenant(db: Database, name: str, instance_id: str | None = None, key_status: str = "ok") -> int:
    return factories.add_tenant(
        db, name, instance_id=instance_id, key_status=key_status, environment="production"
    )


def add_run(db: Database, tid: int, resource: str, status: str, finished: int | None, **kw: Any) -> None:
    with db.transaction() as conn:
        run_id = runs.start(conn, tid, resource, kw.pop("mode", "incremental"), (finished or NOW) - 1000)
        if status != "running":
            runs.finish(conn, run_id, status, finished or NOW, **kw)


def add_mirror(db: Database, tid: int, resource: str, n: int, deleted: int = 0) -> None:
    rows = [
        {
            "tenant_id": tid,
            "resource": resource,
            "object_id": f"{resource}_{i}",
            "data": "{}",
            "content_hash": "h",
            "version": 1,
            "first_seen_ms": NOW,
            "last_seen_ms": NOW,
            "seen_pass": 0,
            "deleted_ms": NOW if i < deleted else None,
        }
        for i in range(n)
    ]
    with db.transaction() as conn:
        conn.execute(insert(MirrorObject.__table__), rows)  # type: ignore[attr-defined]


def add_events(db: Database, tid: int, resource: str, sequences: range) -> None:
    rows = [
        {
            "tenant_id": tid,
            "sequence": s,
            "event_id": f"evt_{tid}_{s}",
            "type": "user.updated",
            "resource": resource,
            "object_id": "x",
            "created_ms": NOW,
            "payload": "{}",
        }
        for s in sequences
    ]
    with db.transaction() as conn:
        conn.execute(insert(OutboxEvent.__table__), rows)  # type: ignore[attr-defined]


def set_cursor(db: Database, sink: str, tid: int, seq: int) -> None:
    with db.transaction() as conn:
        conn.execute(insert(SinkCursor.__table__).values(sink=sink, tenant_id=tid, sequence=seq))  # type: ignore[attr-defined]


def resource(report: Any, tenant: str, name: str) -> Any:
    t = next(t for t in report.tenants if t.name == tenant)
    return next(r for r in t.resources if r.resource == name)


def test_last_success_error_running_and_objects(db: Database) -> None:
    acme = add_tenant(db, "acme")
    add_run(db, acme, "users", "ok", NOW - 60_000)
    add_run(db, acme, "users", "failed", NOW - 30_000, error="Clerk answered 503 eight times")
    add_run(db, acme, "organizations", "failed", NOW - 90_000, error="old failure")
    add_run(db, acme, "organizations", "ok", NOW - 10_000)
    add_run(db, acme, "invitations", "running", None)
    add_mirror(db, acme, "users", 5, deleted=2)
    report = build_status(db, Settings(), now_ms=NOW)
    users = resource(report, "acme", "users")
    assert users.last_success_ms == NOW - 60_000
    assert users.last_error == "Clerk answered 503 eight times"
    assert users.objects_mirrored == 3
    orgs = resource(report, "acme", "organizations")
    assert orgs.last_success_ms == NOW - 10_000
    assert orgs.last_error is None  # superseded by a later success
    assert resource(report, "acme", "invitations").running is True
    assert resource(report, "acme", "sessions").last_success_ms is None


def test_pending_events_without_sinks_is_everything(db: Database) -> None:
    acme = add_tenant(db, "acme")
    add_events(db, acme, "users", range(1, 8))
    add_events(db, acme, "organizations", range(8, 10))
    set_cursor(db, "old-sink-no-longer-configured", acme, 9)
    report = build_status(db, Settings(), now_ms=NOW)
    assert resource(report, "acme", "users").events_pending == 7
    assert resource(report, "acme", "organizations").events_pending == 2


def test_pending_events_count_from_the_slowest_configured_sink(db: Database) -> None:
    acme = add_tenant(db, "acme")
    beta = add_tenant(db, "beta")
    add_events(db, acme, "users", range(1, 11))
    add_events(db, beta, "users", range(1, 4))
    settings = Settings().replace(
        sinks=(SinkSettings(kind="stdout", name="fast"), SinkSettings(kind="stdout"))
    )
    set_cursor(db, "fast", acme, 10)
    set_cursor(db, "stdout-1", acme, 6)
    set_cursor(db, "fast", beta, 3)  # the unnamed sink never delivered beta: all 3 pending
    report = build_status(db, settings, now_ms=NOW)
    assert resource(report, "acme", "users").events_pending == 4
    assert resource(report, "beta", "users").events_pending == 3


def test_live_daemon_adds_next_runs_and_budget(db: Database) -> None:
    acme = add_tenant(db, "acme", instance_id="ins_acme")
    now = now_ms()
    ops.write_daemon_state(
        db,
        "host:1",
        {
            "pid": 1,
            "started_ms": now,
            "tenants": 1,
            "running": ["pass:acme:users:incremental"],
            "last_error": None,
            "next_runs": {f"incremental:{acme}:users": now + 120_000, f"full:{acme}:users": now + 86_000_000},
            "budgets": {"ins_acme": {"used_10s": 4, "used_60s": 42, "capacity_10s": 500}},
        },
    )
    report = build_status(db, Settings(), now_ms=now)
    assert [d.alive for d in report.daemons] == [True]
    users = resource(report, "acme", "users")
    assert users.next_run_ms == now + 120_000
    assert users.next_full_ms == now + 86_000_000
    tenant = report.tenants[0]
    assert (tenant.budget_used_last_minute, tenant.budget_capacity_per_10s, tenant.budget_source) == (
        42,
        500,
        "daemon",
    )
    text = render_text(report)
    assert "daemon host:1: running" in text
    assert "in 2m" in text
    assert "budget last minute: 42/3000 requests" in text
    json.dumps(report.to_dict())


def test_a_silent_daemon_is_not_trusted(db: Database) -> None:
    acme = add_tenant(db, "acme", instance_id="ins_acme")
    ops.write_daemon_state(
        db,
        "host:1",
        {"pid": 1, "next_runs": {f"incremental:{acme}:users": 5}, "budgets": {"ins_acme": {"used_60s": 42}}},
    )
    add_run(db, acme, "users", "ok", now_ms() + 10 * 60_000 - 5_000, requests=17)
    report = build_status(db, Settings(), now_ms=now_ms() + 10 * 60_000)
    assert [d.alive for d in report.daemons] == [False]
    assert resource(report, "acme", "users").next_run_ms is None
    assert report.tenants[0].budget_used_last_minute == 17
    assert report.tenants[0].budget_source == "runs"
    assert "not running" in render_text(report)


def test_removed_tenants_are_not_listed_and_rejected_keys_are_flagged(db: Database) -> None:
    add_tenant(db, "gone", key_status="removed")
    add_tenant(db, "locked", key_status="key_rejected")
    report = build_status(db, Settings(), now_ms=NOW)
    assert [t.name for t in report.tenants] == ["locked"]
    assert "key key_rejected" in render_text(report)


def test_empty_database(db: Database) -> None:
    text = render_text(build_status(db, Settings(), now_ms=NOW))
    assert "no tenants enrolled" in text
    assert "none has run" in text


def test_daemon_state_write_is_an_upsert(db: Database) -> None:
    ops.write_daemon_state(db, "r1", {"pid": 1, "tenants": 1})
    ops.write_daemon_state(db, "r1", {"pid": 1, "tenants": 2})
    with db.read() as conn:
        states = ops.read_daemon_states(conn)
    assert [(s["replica"], s["tenants"]) for s in states] == [("r1", 2)]


def test_sessions_backlog_is_shown(db: Database) -> None:
    from clerk_sync.store import session_checks

    tid = add_tenant(db, "acme")
    with db.transaction() as conn:
        # Two users signed in and were never checked: both are due.
        session_checks.note_users(
            conn, tid, [("user_a", NOW - 1000, NOW - 1000), ("user_b", NOW - 500, None)]
        )
    report = build_status(db, Settings(), now_ms=NOW)
    (tenant,) = report.tenants
    assert tenant.sessions_backlog == 2
    assert "sessions backlog: 2 users" in render_text(report)
