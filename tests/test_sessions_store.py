"""Session checks in the database: seeding, due selection (same as the pure plan), backlog."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from clerk_sync.config import SessionSettings
from clerk_sync.session_policy import DAY_MS as DAY
from clerk_sync.session_policy import CheckState, SessionSummary, plan_checks
from clerk_sync.store import mirror, session_checks
from clerk_sync.store.db import Database
from tests.factories import add_tenant

NOW = 1_790_000_000_000 + 12 * 3_600_000
SETTINGS = SessionSettings(max_requests_per_pass=50, fresh_active_s=900.0, fresh_idle_s=86_400.0)


@pytest.fixture
def tenant_id(db: Database) -> int:
    return add_tenant(db, "acme")


def mirror_row(tenant_id: int, resource: str, oid: str, data: dict[str, Any], **cols: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "resource": resource,
        "object_id": oid,
        "data": orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode(),
        "content_hash": "h",
        "version": 1,
        "created_at_ms": data.get("created_at"),
        "updated_at_ms": data.get("updated_at"),
        "parent_id": cols.get("parent_id"),
        "first_seen_ms": 1,
        "last_seen_ms": 1,
        "seen_pass": 0,
        "deleted_ms": cols.get("deleted_ms"),
    }


def user(uid: str, sign_in: int | None, active: int | None = None) -> dict[str, Any]:
    return {
        "object": "user",
        "id": uid,
        "last_sign_in_at": sign_in,
        "last_active_at": active,
        "created_at": 1,
    }


def insert_states(db: Database, tenant_id: int, states: list[CheckState]) -> None:
    from sqlalchemy import insert

    with db.transaction() as conn:
        conn.execute(
            insert(session_checks.SESSION_CHECK),
            [
                {
                    "tenant_id": tenant_id,
                    "user_id": s.user_id,
                    "sign_in_ms": s.sign_in_ms,
                    "checked_sign_in_ms": s.checked_sign_in_ms,
                    "checked_ms": s.checked_ms,
                    "active_ms": s.active_ms,
                    "open_sessions": s.open_sessions,
                    "next_expiry_ms": s.next_expiry_ms,
                }
                for s in states
            ],
        )


def test_seed_reads_sign_in_and_activity_once_per_live_user(db: Database, tenant_id: int) -> None:
    other = add_tenant(db, "beta")
    with db.transaction() as conn:
        mirror.upsert(
            conn,
            [
                mirror_row(tenant_id, "users", "u1", user("u1", NOW - 5, NOW - DAY)),
                mirror_row(tenant_id, "users", "u2", user("u2", None)),
                mirror_row(tenant_id, "users", "gone", user("gone", NOW), deleted_ms=NOW),
                mirror_row(other, "users", "u9", user("u9", NOW)),
            ],
        )
        assert session_checks.seed_from_users(conn, tenant_id) == 2
        assert session_checks.seed_from_users(conn, tenant_id) == 0
        got = session_checks.load(conn, tenant_id, ["u1", "u2", "gone", "u9"])
    assert got == {
        "u1": CheckState("u1", sign_in_ms=NOW - 5, active_ms=NOW - DAY),
        "u2": CheckState("u2"),
    }


def test_note_users_only_moves_forward(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        session_checks.note_users(conn, tenant_id, [("u1", NOW - 10, None), ("u2", None, NOW)])
        session_checks.note_users(conn, tenant_id, [("u1", NOW - 20, NOW - 1), ("u2", NOW, NOW - DAY)])
        got = session_checks.load(conn, tenant_id, ["u1", "u2"])
    assert got["u1"] == CheckState("u1", sign_in_ms=NOW - 10, active_ms=NOW - 1)
    assert got["u2"] == CheckState("u2", sign_in_ms=NOW, active_ms=NOW)


def test_record_checks_clears_the_sign_in_and_keeps_open_state(db: Database, tenant_id: int) -> None:
    insert_states(db, tenant_id, [CheckState("u1", sign_in_ms=NOW - 10)])
    with db.transaction() as conn:
        state = session_checks.load(conn, tenant_id, ["u1"])["u1"]
        session_checks.record_checks(conn, tenant_id, [(state, NOW, SessionSummary(2, NOW + DAY, NOW - 3))])
        assert session_checks.due_users(conn, tenant_id, NOW, SETTINGS, 10) == []
        got = session_checks.load(conn, tenant_id, ["u1"])["u1"]
    assert got == CheckState("u1", NOW - 10, NOW - 10, NOW, NOW - 3, 2, NOW + DAY)


def random_states(rng: random.Random, n: int) -> list[CheckState]:
    out = []
    for i in range(n):
        sign_in = rng.choice([None, NOW - rng.randrange(30 * DAY)])
        checked = rng.choice([None, NOW - rng.randrange(3 * DAY)])
        checked_sign_in = (
            rng.choice([None, sign_in, (sign_in or NOW) - rng.randrange(DAY)]) if checked else None
        )
        out.append(
            CheckState(
                f"user_{i:04}",
                sign_in_ms=sign_in,
                checked_sign_in_ms=checked_sign_in,
                checked_ms=checked,
                active_ms=rng.choice([None, NOW - rng.randrange(2 * DAY)]),
                open_sessions=rng.choice([0, 0, 1, 3]),
                next_expiry_ms=rng.choice([None, NOW + rng.randrange(-DAY, DAY)]),
            )
        )
    return out


@pytest.mark.parametrize("cap", [1, 7, 50, 1000])
def test_due_users_in_sql_matches_the_pure_plan(db: Database, tenant_id: int, cap: int) -> None:
    states = random_states(random.Random(cap), 400)
    insert_states(db, tenant_id, states)
    with db.read() as conn:
        got = [s.user_id for s in session_checks.due_users(conn, tenant_id, NOW, SETTINGS, cap)]
        pending = session_checks.count_due(conn, tenant_id, NOW, SETTINGS)
    expected = plan_checks(states, NOW, SETTINGS, cap)
    assert got == expected
    assert pending == len(plan_checks(states, NOW, SETTINGS, 10_000))
    assert 0 < len(got) <= cap


def test_sessions_backlog_counts_due_users_and_the_stalest_check(db: Database, tenant_id: int) -> None:
    assert session_checks.sessions_backlog(db, tenant_id, settings=SETTINGS, now=NOW) == (0, None)
    insert_states(
        db,
        tenant_id,
        [
            CheckState("new", sign_in_ms=NOW - 1),
            CheckState(
                "open", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 7_200_000, open_sessions=1
            ),
            CheckState("fresh", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 1000, open_sessions=1),
            CheckState("closed", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 9 * DAY),
        ],
    )
    # "open" is idle (no activity today), so 2 h old is within the 24 h target: only "new" is due.
    assert session_checks.sessions_backlog(db, tenant_id, settings=SETTINGS, now=NOW) == (1, 7200.0)


def test_deleted_users_with_live_sessions(db: Database, tenant_id: int) -> None:
    sess = {"object": "session", "status": "active", "created_at": 1}
    with db.transaction() as conn:
        mirror.upsert(
            conn,
            [
                mirror_row(tenant_id, "users", "alive", user("alive", 1)),
                mirror_row(tenant_id, "users", "dead", user("dead", 1), deleted_ms=NOW),
                mirror_row(tenant_id, "users", "dead2", user("dead2", 1), deleted_ms=NOW),
                mirror_row(tenant_id, "sessions", "s1", {**sess, "id": "s1"}, parent_id="alive"),
                mirror_row(tenant_id, "sessions", "s2", {**sess, "id": "s2"}, parent_id="dead"),
                mirror_row(tenant_id, "sessions", "s3", {**sess, "id": "s3"}, parent_id="dead"),
                mirror_row(
                    tenant_id, "sessions", "s4", {**sess, "id": "s4"}, parent_id="dead2", deleted_ms=1
                ),
            ],
        )
        session_checks.note_users(conn, tenant_id, [("alive", 1, None), ("dead2", 1, None)])
        assert session_checks.deleted_users_with_sessions(conn, tenant_id) == ["dead"]
        assert session_checks.deleted_users_with_checks(conn, tenant_id) == ["dead2"]
        session_checks.forget(conn, tenant_id, ["dead2"])
        assert session_checks.deleted_users_with_checks(conn, tenant_id) == []
