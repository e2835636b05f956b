"""Per-user session checks: who to list next, and the sessions backlog.

One ``session_check`` row per user of a tenant (see ``session_policy.py`` for what each column means
and why). Rows come from two places, both cheap:

- ``seed_from_users``: users in the users mirror that have no row yet (an anti-join, so each user
  is read once), with ``last_sign_in_at`` / ``last_active_at`` taken from the mirrored JSON;
- ``note_users``: users returned by the sessions pass's sign-in discovery
  (``GET /users?last_sign_in_at_after=…``), which moves ``sign_in_ms`` forward.

``due_users`` is the SQL form of ``session_policy.plan_checks`` (same tiers, same order, same reserve),
so selecting 1,000 users out of 100,000 is one indexed scan and no Python loop over the tenant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, insert, or_, select, text, update

from clerk_sync.config import SessionSettings
from clerk_sync.session_policy import CheckState, SessionSummary, day_start_ms, reserve_size
from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import SessionCheck

SESSION_CHECK = SessionCheck.__table__  # type: ignore[attr-defined]
_T = SESSION_CHECK.c

_CHUNK = 500

_STATE_COLUMNS = (
    _T.user_id,
    _T.sign_in_ms,
    _T.checked_sign_in_ms,
    _T.checked_ms,
    _T.active_ms,
    _T.open_sessions,
    _T.next_expiry_ms,
)


def _state(r: Any) -> CheckState:
    return CheckState(r[0], r[1], r[2], r[3], r[4], r[5] or 0, r[6])


def _json_int(dialect: str, key: str) -> str:
    if dialect == "postgresql":
        return f"CAST(CAST(u.data AS json) ->> '{key}' AS BIGINT)"
    return f"CAST(json_extract(u.data, '$.{key}') AS INTEGER)"


def seed_from_users(conn: Connection, tenant_id: int) -> int:
    """Give every live mirrored user without a row one; return how many were added."""
    dialect = conn.dialect.name
    result = conn.execute(
        text(
            "INSERT INTO session_check (tenant_id, user_id, sign_in_ms, active_ms, open_sessions) "
            f"SELECT u.tenant_id, u.object_id, {_json_int(dialect, 'last_sign_in_at')}, "
            f"{_json_int(dialect, 'last_active_at')}, 0 "
            "FROM mirror u WHERE u.tenant_id = :t AND u.resource = 'users' AND u.deleted_ms IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM session_check c WHERE c.tenant_id = u.tenant_id "
            "AND c.user_id = u.object_id)"
        ),
        {"t": tenant_id},
    )
    return int(result.rowcount or 0)


def load(conn: Connection, tenant_id: int, user_ids: Sequence[str]) -> dict[str, CheckState]:
    """Rows for these users, by id."""
    out: dict[str, CheckState] = {}
    for i in range(0, len(user_ids), _CHUNK):
        chunk = list(user_ids[i : i + _CHUNK])
        rows = conn.execute(select(*_STATE_COLUMNS).where(_T.tenant_id == tenant_id, _T.user_id.in_(chunk)))
        out.update((r[0], _state(r)) for r in rows)
    return out


def note_users(conn: Connection, tenant_id: int, users: Iterable[tuple[str, int | None, int | None]]) -> None:
    """Record ``(user_id, last_sign_in_at, last_active_at)`` seen on Clerk; values only move forward."""
    items = list({uid: (uid, s, a) for uid, s, a in users}.values())
    for i in range(0, len(items), _CHUNK):
        chunk = items[i : i + _CHUNK]
        known = load(conn, tenant_id, [uid for uid, _, _ in chunk])
        fresh = []
        moved = []
        for uid, sign_in, active in chunk:
            k = known.get(uid)
            if k is None:
                fresh.append(
                    {
                        "tenant_id": tenant_id,
                        "user_id": uid,
                        "sign_in_ms": sign_in,
                        "active_ms": active,
                        "open_sessions": 0,
                    }
                )
                continue
            new_sign_in = _max(k.sign_in_ms, sign_in)
            new_active = _max(k.active_ms, active)
            if (new_sign_in, new_active) != (k.sign_in_ms, k.active_ms):
                moved.append({"b_t": tenant_id, "b_u": uid, "b_s": new_sign_in, "b_a": new_active})
        if fresh:
            conn.execute(insert(SESSION_CHECK), fresh)
        if moved:
            conn.execute(
                update(SESSION_CHECK)
                .where(_T.tenant_id == bindparam("b_t"), _T.user_id == bindparam("b_u"))
                .values(sign_in_ms=bindparam("b_s"), active_ms=bindparam("b_a")),
                moved,
            )


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def record_checks(
    conn: Connection, tenant_id: int, checks: Iterable[tuple[CheckState, int, SessionSummary]]
) -> None:
    """After listing: ``(state as selected, checked_ms, summary of what the listing showed)``."""
    rows = [
        {
            "b_t": tenant_id,
            "b_u": state.user_id,
            "b_csi": state.sign_in_ms,
            "b_c": checked,
            "b_a": _max(state.active_ms, summary.active_ms),
            "b_o": summary.open_sessions,
            "b_e": summary.next_expiry_ms,
        }
        for state, checked, summary in checks
    ]
    if not rows:
        return
    conn.execute(
        update(SESSION_CHECK)
        .where(_T.tenant_id == bindparam("b_t"), _T.user_id == bindparam("b_u"))
        .values(
            checked_sign_in_ms=bindparam("b_csi"),
            checked_ms=bindparam("b_c"),
            active_ms=bindparam("b_a"),
            open_sessions=bindparam("b_o"),
            next_expiry_ms=bindparam("b_e"),
        ),
        rows,
    )


def forget(conn: Connection, tenant_id: int, user_ids: Sequence[str]) -> None:
    """Drop the rows of deleted users."""
    for i in range(0, len(user_ids), _CHUNK):
        conn.execute(
            delete(SESSION_CHECK).where(
                _T.tenant_id == tenant_id, _T.user_id.in_(list(user_ids[i : i + _CHUNK]))
            )
        )


def _tiers(now: int, settings: SessionSettings) -> tuple[Any, Any, Any]:
    """SQL ``(is_due, tier, due_ms)`` expressions mirroring ``session_policy.check_due``."""
    fresh_ms = case(
        (_T.active_ms >= day_start_ms(now), int(settings.fresh_active_s * 1000)),
        else_=int(settings.fresh_idle_s * 1000),
    )
    tier0 = and_(
        _T.sign_in_ms.is_not(None),
        or_(_T.checked_ms.is_(None), _T.sign_in_ms > func.coalesce(_T.checked_sign_in_ms, -1)),
    )
    tier1 = and_(_T.open_sessions > 0, _T.checked_ms.is_not(None), _T.checked_ms + fresh_ms <= now)
    tier2 = and_(_T.next_expiry_ms.is_not(None), _T.next_expiry_ms <= now)
    tier = case((tier0, 0), (tier1, 1), (tier2, 2), else_=3)
    due = case((tier0, _T.sign_in_ms), (tier1, _T.checked_ms + fresh_ms), else_=_T.next_expiry_ms)
    return or_(tier0, tier1, tier2), tier, due


def due_users(
    conn: Connection, tenant_id: int, now: int, settings: SessionSettings, cap: int
) -> list[CheckState]:
    """The users to list this pass, in order: ``session_policy.plan_checks`` done by the database."""
    if cap <= 0:
        return []
    is_due, tier, due = _tiers(now, settings)
    base = select(*_STATE_COLUMNS).where(_T.tenant_id == tenant_id, is_due)
    by_tier = cap - reserve_size(cap)
    chosen: list[CheckState] = []
    if by_tier > 0:
        rows = conn.execute(
            base.order_by(tier, case((tier == 0, -due), else_=due), _T.user_id).limit(by_tier)
        )
        chosen = [_state(r) for r in rows]
    if len(chosen) < cap:
        taken = {s.user_id for s in chosen}
        for r in conn.execute(base.order_by(due, _T.user_id).limit(cap)):
            if len(chosen) >= cap:
                break
            if r[0] not in taken:
                chosen.append(_state(r))
                taken.add(r[0])
    return chosen


def count_due(conn: Connection, tenant_id: int, now: int, settings: SessionSettings) -> int:
    """How many users are due for a check now (the backlog)."""
    is_due, _, _ = _tiers(now, settings)
    return int(conn.execute(select(func.count()).where(_T.tenant_id == tenant_id, is_due)).scalar_one())


def deleted_users_with_sessions(conn: Connection, tenant_id: int, limit: int = 500) -> list[str]:
    """Users tombstoned in the users mirror that still hold live session rows."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT s.parent_id FROM mirror s JOIN mirror u ON u.tenant_id = s.tenant_id "
            "AND u.resource = 'users' AND u.object_id = s.parent_id "
            "WHERE s.tenant_id = :t AND s.resource = 'sessions' AND s.deleted_ms IS NULL "
            "AND u.deleted_ms IS NOT NULL ORDER BY s.parent_id LIMIT :n"
        ),
        {"t": tenant_id, "n": limit},
    )
    return [r[0] for r in rows]


def deleted_users_with_checks(conn: Connection, tenant_id: int, limit: int = 500) -> list[str]:
    """Users tombstoned in the users mirror whose ``session_check`` row is left over."""
    rows = conn.execute(
        text(
            "SELECT c.user_id FROM session_check c JOIN mirror u ON u.tenant_id = c.tenant_id "
            "AND u.resource = 'users' AND u.object_id = c.user_id "
            "WHERE c.tenant_id = :t AND u.deleted_ms IS NOT NULL ORDER BY c.user_id LIMIT :n"
        ),
        {"t": tenant_id, "n": limit},
    )
    return [r[0] for r in rows]


def sessions_backlog(
    db: Database, tenant_id: int, *, settings: SessionSettings | None = None, now: int | None = None
) -> tuple[int, float | None]:
    """``(users due for a session check, age in seconds of the stalest check of a user with open sessions)``.

    For ``clerk-sync status``. The age is None when no user is known to hold an open session.
    """
    settings = settings or SessionSettings()
    now = now_ms() if now is None else now
    with db.read() as conn:
        pending = count_due(conn, tenant_id, now, settings)
        oldest = conn.execute(
            select(func.min(_T.checked_ms)).where(
                _T.tenant_id == tenant_id, _T.open_sessions > 0, _T.checked_ms.is_not(None)
            )
        ).scalar()
    return pending, (None if oldest is None else max(0.0, (now - int(oldest)) / 1000))


def max_sign_in(conn: Connection, tenant_id: int) -> int | None:
    """The latest ``last_sign_in_at`` known for any user of the tenant."""
    value = conn.execute(select(func.max(_T.sign_in_ms)).where(_T.tenant_id == tenant_id)).scalar()
    return None if value is None else int(value)
