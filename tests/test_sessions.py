"""Pure session logic: which users are due, in what order, and which events a change gives."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest

from clerk_sync import session_policy as sessions
from clerk_sync.config import SessionSettings
from clerk_sync.diff import prepare
from clerk_sync.resources import SESSIONS
from clerk_sync.session_policy import CheckState, check_due, plan_checks

NOW = 1_790_000_000_000 + 12 * 3_600_000  # noon UTC
DAY = sessions.DAY_MS
SETTINGS = SessionSettings(max_requests_per_pass=10, fresh_active_s=900.0, fresh_idle_s=86_400.0)


def session(sid: str = "sess_1", status: str = "active", **fields: Any) -> dict[str, Any]:
    base = {
        "object": "session",
        "id": sid,
        "user_id": "user_1",
        "client_id": "client_1",
        "actor": None,
        "status": status,
        "last_active_organization_id": None,
        "last_active_at": NOW - 60_000,
        "latest_activity": None,
        "expire_at": NOW + 7 * DAY,
        "abandon_at": NOW + 30 * DAY,
        "updated_at": NOW - 60_000,
        "created_at": NOW - 3_600_000,
    }
    base.update(fields)
    return base


@dataclass
class Row:
    data: str
    content_hash: str
    version: int = 1
    deleted_ms: int | None = None


def row(obj: dict[str, Any], version: int = 1, deleted_ms: int | None = None) -> Row:
    f = prepare(SESSIONS, obj)
    return Row(f.data, f.content_hash, version, deleted_ms)


# --- event types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["session.created"]),
        ("pending", ["session.pending"]),
        ("ended", ["session.created", "session.ended"]),
        ("revoked", ["session.created", "session.revoked"]),
        ("expired", ["session.created", "session.expired"]),
    ],
)
def test_new_session_event_types(status: str, expected: list[str]) -> None:
    assert sessions.new_session_event_types(status) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("active", "ended", ["session.ended"]),
        ("active", "removed", ["session.removed"]),
        ("active", "revoked", ["session.revoked"]),
        ("active", "pending", ["session.pending"]),
        ("pending", "active", ["session.created"]),
        ("active", "expired", ["session.expired"]),
        ("active", "abandoned", ["session.abandoned"]),
        ("active", "replaced", ["session.replaced"]),
        ("active", "active", []),
        ("ended", "ended", []),
    ],
)
def test_status_transitions(old: str, new: str, expected: list[str]) -> None:
    assert sessions.status_event_types(old, new) == expected


@pytest.mark.parametrize("status", ["expired", "abandoned", "replaced"])
def test_extension_types_can_be_switched_off(status: str) -> None:
    assert sessions.status_event_types("active", status, extension_types=False) == []
    assert sessions.new_session_event_types(status, extension_types=False) == ["session.created"]
    # Clerk's own types are unaffected.
    assert sessions.status_event_types("active", "ended", extension_types=False) == ["session.ended"]


def test_purge_emits_expired_only_for_open_sessions_past_expiry() -> None:
    past = session(expire_at=NOW - 1)
    assert sessions.purge_event_types(past, NOW) == ["session.expired"]
    assert sessions.purge_event_types(session(abandon_at=NOW - 1, expire_at=NOW + DAY), NOW) == [
        "session.expired"
    ]
    assert sessions.purge_event_types(session(), NOW) == []  # not yet expired
    assert sessions.purge_event_types(session(status="ended", expire_at=NOW - 1), NOW) == []
    assert sessions.purge_event_types(past, NOW, extension_types=False) == []


def test_deleted_user_removes_only_open_sessions() -> None:
    assert sessions.deleted_user_event_type(session()) == "session.removed"
    assert sessions.deleted_user_event_type(session(status="pending")) == "session.removed"
    assert sessions.deleted_user_event_type(session(status="revoked")) is None


# --- diff of one user's sessions -----------------------------------------------------------------


def test_diff_new_session_gives_created() -> None:
    d = sessions.diff_user_sessions([prepare(SESSIONS, session())], {}, now_ms=NOW, silent_before_ms=None)
    assert [(e.type, e.session_id, e.version) for e in d.events] == [("session.created", "sess_1", 1)]
    assert [(f.object_id, v) for f, v in d.upserts] == [("sess_1", 1)]


def test_diff_baseline_session_is_silent() -> None:
    old = session(created_at=NOW - DAY)
    d = sessions.diff_user_sessions([prepare(SESSIONS, old)], {}, now_ms=NOW, silent_before_ms=NOW - 60_000)
    assert d.events == []
    assert len(d.upserts) == 1
    # A session created after the baseline started is news even on the user's first check.
    new = session("sess_2", created_at=NOW - 1000)
    d = sessions.diff_user_sessions([prepare(SESSIONS, new)], {}, now_ms=NOW, silent_before_ms=NOW - 60_000)
    assert [e.type for e in d.events] == ["session.created"]


def test_diff_activity_only_is_refreshed_without_event() -> None:
    known = {"sess_1": row(session())}
    moved = session(
        last_active_at=NOW, updated_at=NOW, latest_activity={"object": "session_activity", "id": "a"}
    )
    d = sessions.diff_user_sessions([prepare(SESSIONS, moved)], known, now_ms=NOW, silent_before_ms=None)
    assert d.events == [] and d.upserts == []
    assert [f.object_id for f in d.refreshed] == ["sess_1"]


def test_diff_status_change_bumps_version_and_emits() -> None:
    known = {"sess_1": row(session(), version=3)}
    d = sessions.diff_user_sessions(
        [prepare(SESSIONS, session(status="revoked", updated_at=NOW))],
        known,
        now_ms=NOW,
        silent_before_ms=None,
    )
    assert [(e.type, e.version, e.session["status"]) for e in d.events] == [("session.revoked", 4, "revoked")]
    assert (d.events[0].changed, d.events[0].previous) == (("status",), {"status": "active"})
    assert [v for _, v in d.upserts] == [4]


def test_diff_purged_session_is_tombstoned_and_silent_unless_expired() -> None:
    known = {
        "sess_old": row(session("sess_old", status="ended", expire_at=NOW - DAY)),
        "sess_lapsed": row(session("sess_lapsed", expire_at=NOW - 1), version=2),
        "sess_live": row(session("sess_live")),
    }
    d = sessions.diff_user_sessions(
        [prepare(SESSIONS, session("sess_live"))], known, now_ms=NOW, silent_before_ms=None
    )
    assert d.purged == {"sess_lapsed": 3, "sess_old": 2}
    assert [(e.type, e.session_id, e.session["status"]) for e in d.events] == [
        ("session.expired", "sess_lapsed", "expired")
    ]
    # An incomplete listing proves nothing about absence.
    d = sessions.diff_user_sessions(
        [prepare(SESSIONS, session("sess_live"))],
        known,
        now_ms=NOW,
        silent_before_ms=None,
        listing_complete=False,
    )
    assert d.purged == {} and d.events == []


def test_diff_tombstoned_session_seen_again_is_not_new() -> None:
    known = {"sess_1": row(session(), version=2, deleted_ms=NOW - 1000)}
    d = sessions.diff_user_sessions([prepare(SESSIONS, session())], known, now_ms=NOW, silent_before_ms=None)
    assert d.events == []
    assert [v for _, v in d.upserts] == [3]


# --- prioritisation -------------------------------------------------------------------------------


def test_never_signed_in_users_are_never_due() -> None:
    assert check_due(CheckState("u"), NOW, SETTINGS) is None


def test_new_and_signed_in_users_are_tier_zero() -> None:
    assert check_due(CheckState("u", sign_in_ms=NOW - 5), NOW, SETTINGS) == (0, NOW - 5)
    s = CheckState("u", sign_in_ms=NOW - 5, checked_sign_in_ms=NOW - 100, checked_ms=NOW - 50)
    assert check_due(s, NOW, SETTINGS) == (0, NOW - 5)
    seen = CheckState("u", sign_in_ms=NOW - 5, checked_sign_in_ms=NOW - 5, checked_ms=NOW - 1)
    assert check_due(seen, NOW, SETTINGS) is None


def test_open_sessions_are_rechecked_by_freshness() -> None:
    active = CheckState("u", sign_in_ms=1, checked_sign_in_ms=1, active_ms=NOW - 3_600_000, open_sessions=1)
    assert check_due(replace(active, checked_ms=NOW - 600_000), NOW, SETTINGS) is None
    assert check_due(replace(active, checked_ms=NOW - 900_000), NOW, SETTINGS) == (1, NOW)
    # Not active today: the idle target applies.
    idle = CheckState(
        "u",
        sign_in_ms=1,
        checked_sign_in_ms=1,
        active_ms=NOW - DAY,
        open_sessions=2,
        checked_ms=NOW - 3_600_000,
    )
    assert check_due(idle, NOW, SETTINGS) is None
    stale = CheckState(
        "u",
        sign_in_ms=1,
        checked_sign_in_ms=1,
        active_ms=NOW - DAY,
        open_sessions=2,
        checked_ms=NOW - DAY - 1,
    )
    assert check_due(stale, NOW, SETTINGS) == (1, NOW - 1)
    # No open sessions: nothing to re-check.
    none_open = CheckState("u", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 10 * DAY)
    assert check_due(none_open, NOW, SETTINGS) is None


def test_passed_expiry_is_tier_two() -> None:
    s = CheckState(
        "u",
        sign_in_ms=1,
        checked_sign_in_ms=1,
        checked_ms=NOW - 60_000,
        open_sessions=1,
        next_expiry_ms=NOW - 10,
    )
    assert check_due(s, NOW, SETTINGS) == (2, NOW - 10)


def test_plan_orders_tiers_and_caps() -> None:
    states = [
        CheckState(
            "expiring",
            sign_in_ms=1,
            checked_sign_in_ms=1,
            checked_ms=NOW - 1,
            open_sessions=1,
            next_expiry_ms=NOW - 5,
        ),
        CheckState("stale", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 2 * DAY, open_sessions=1),
        CheckState("old_sign_in", sign_in_ms=NOW - 1000),
        CheckState("new_sign_in", sign_in_ms=NOW - 10),
        CheckState("quiet", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 1),
    ]
    assert plan_checks(states, NOW, SETTINGS, cap=10) == ["new_sign_in", "old_sign_in", "stale", "expiring"]
    # A cap below the reserve divisor reserves nothing: strictly by tier.
    assert plan_checks(states, NOW, SETTINGS, cap=2) == ["new_sign_in", "old_sign_in"]


def test_reserve_serves_the_longest_waiting_during_a_burst() -> None:
    burst = [CheckState(f"signin{i:03}", sign_in_ms=NOW - i) for i in range(100)]
    waiting = CheckState(
        "stale", sign_in_ms=1, checked_sign_in_ms=1, checked_ms=NOW - 3 * DAY, open_sessions=1
    )
    chosen = plan_checks([*burst, waiting], NOW, SETTINGS, cap=10)
    assert len(chosen) == 10
    assert "stale" in chosen  # its due time (2 days ago) beats every sign-in
    assert chosen[:8] == [f"signin{i:03}" for i in range(8)]  # newest sign-ins first


def test_every_due_user_is_eventually_checked_under_a_sustained_burst() -> None:
    """Carry-over: with more due users than the cap every pass, nobody waits forever."""
    rng = random.Random(7)
    states: dict[str, CheckState] = {
        f"u{i:04}": CheckState(f"u{i:04}", sign_in_ms=NOW - rng.randrange(10 * DAY)) for i in range(300)
    }
    now = NOW
    first_checked: dict[str, int] = {}
    for pass_no in range(200):
        now += 60_000
        # 15 fresh sign-ins every pass, more than the 10 checks a pass may make.
        for j in range(15):
            uid = f"burst{pass_no:03}_{j:02}"
            states[uid] = CheckState(uid, sign_in_ms=now - j)
        for uid in plan_checks(states.values(), now, SETTINGS, cap=10):
            s = states[uid]
            first_checked.setdefault(uid, pass_no)
            states[uid] = CheckState(uid, s.sign_in_ms, s.sign_in_ms, now, s.active_ms, 0, None)
    # The burst outruns the cap forever, yet the reserve drains the oldest backlog first.
    assert all(f"u{i:04}" in first_checked for i in range(300))
    assert all(f"burst000_{j:02}" in first_checked for j in range(15))


def test_summarize_counts_open_sessions_and_future_expiry() -> None:
    got = sessions.summarize(
        [
            session("a", expire_at=NOW + 100, abandon_at=NOW + 50, last_active_at=NOW - 5),
            session("b", status="pending", expire_at=NOW - 1, abandon_at=NOW + 500),
            session("c", status="ended", expire_at=NOW + 1, last_active_at=NOW - 1),
        ],
        NOW,
    )
    assert got == sessions.SessionSummary(open_sessions=2, next_expiry_ms=NOW + 50, active_ms=NOW - 1)
    assert sessions.summarize([], NOW) == sessions.SessionSummary(0, None, None)


def test_session_fixture_is_canonical_json() -> None:
    # The differ compares canonical JSON strings; the fixture must round-trip.
    assert orjson.loads(row(session()).data)["id"] == "sess_1"


def test_sign_in_discovery_keyset_steps() -> None:
    assert sessions.next_sign_in_after(100, [101, 150, 150]) == 149  # ties at 150 are read again
    assert sessions.next_sign_in_after(100, [101, 101, 102]) == 101
    assert sessions.next_sign_in_after(100, [101, 101]) is None  # one millisecond fills the page
    assert sessions.next_sign_in_after(100, []) is None
