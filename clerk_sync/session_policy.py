"""Pure session policy: which users to poll, in what order, and how session changes become events.

Clerk lists sessions only per user (``GET /sessions?user_id=…``), so polling every user costs one
request per user each time. What we know instead, per user (the ``session_check`` table, see
``store/session_checks.py``): the latest ``last_sign_in_at`` (ms, moves on every sign-in), when we
last listed the user's sessions, how many of them were still open (``active``/``pending``), their
nearest ``expire_at``/``abandon_at``, and the latest activity we saw. From that a user is *due*:

- tier 0: signed in since their last check, or never checked and signed in at least once
  (newest sign-ins first: that is where new sessions are);
- tier 1: holds open sessions not re-checked within ``sessions.fresh_active_s`` (active today,
  UTC) or ``sessions.fresh_idle_s`` (otherwise): sign-outs and revocations change nothing on the
  user, so only re-listing finds them;
- tier 2: an open session's ``expire_at``/``abandon_at`` has passed (to observe its final status).

A pass lists at most ``sessions.max_requests_per_pass`` users' sessions. Four fifths of that go by
tier; the rest to whoever has waited longest (earliest due time across all tiers), so a burst of
sign-ins never starves the re-checks and every due user is eventually listed (fair carry-over:
nothing is lost between passes, the due state lives in the database).

Events: a new session is ``session.created`` (``session.pending`` if it starts pending, followed by
its final status event if we first see it already over); status transitions give
``session.ended|removed|revoked|pending`` like Clerk's webhooks, and ``session.expired|abandoned|
replaced`` as documented extension types (``events.extension_types``). Activity-only changes give
nothing. A session missing from a complete listing was purged by Clerk (not deleted): its mirror
row is tombstoned and nothing is emitted, unless it was still open and past its expiry, which gives
``session.expired``. A user deleted while holding open sessions: see ``deleted_user_event_type``.

The pass that applies this policy is ``sessions.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from clerk_sync.config import SessionSettings
from clerk_sync.diff import Fetched, changed_fields, diff_page
from clerk_sync.resources import SESSIONS

OPEN_STATUSES = frozenset({"active", "pending"})
"""Statuses a session can still leave."""
FINAL_STATUSES = frozenset({"ended", "expired", "removed", "replaced", "revoked", "abandoned"})
CLERK_STATUS_EVENTS = frozenset({"ended", "removed", "revoked", "pending"})
"""Statuses with a Clerk webhook type ``session.<status>``."""
EXTENSION_STATUS_EVENTS = frozenset({"expired", "abandoned", "replaced"})
"""Statuses Clerk sends no webhook for: our extension types ``session.<status>``."""

CLERK_TYPES: tuple[str, ...] = (
    "session.created",
    "session.pending",
    "session.ended",
    "session.removed",
    "session.revoked",
)
"""Session event types Clerk defines (payload: ``SessionEventPayload``)."""
EXTENSION_TYPES: tuple[str, ...] = ("session.expired", "session.abandoned", "session.replaced")
"""Session event types of ours (same payload shape), off with ``events.extension_types = false``."""

DAY_MS = 86_400_000
RESERVE_DIVISOR = 5
"""One fifth of each pass's cap goes to the longest-waiting users, whatever their tier."""


def is_open(status: Any) -> bool:
    """True for ``active`` and ``pending``: the session can still end."""
    return status in OPEN_STATUSES


def _status_type(status: Any, extension_types: bool) -> list[str]:
    if status in CLERK_STATUS_EVENTS:
        return [f"session.{status}"]
    if status in EXTENSION_STATUS_EVENTS and extension_types:
        return [f"session.{status}"]
    return []


def new_session_event_types(status: Any, *, extension_types: bool = True) -> list[str]:
    """Events for a session seen for the first time (Clerk would have sent each of them)."""
    if status == "pending":
        return ["session.pending"]
    if status == "active":
        return ["session.created"]
    if status in FINAL_STATUSES:
        # Created and over between two checks: both happened.
        return ["session.created", *_status_type(status, extension_types)]
    return ["session.created"]


def status_event_types(old_status: Any, new_status: Any, *, extension_types: bool = True) -> list[str]:
    """Events for a known session whose status moved from ``old_status`` to ``new_status``."""
    if old_status == new_status:
        return []
    if new_status == "active":
        # pending -> active is when Clerk's session really starts.
        return ["session.created"] if old_status == "pending" else []
    return _status_type(new_status, extension_types)


def expiry_ms(session: Mapping[str, Any]) -> int | None:
    """The earliest of ``expire_at`` and ``abandon_at`` (ms), if any."""
    times = [
        v
        for v in (session.get("expire_at"), session.get("abandon_at"))
        if isinstance(v, int) and not isinstance(v, bool)
    ]
    return min(times) if times else None


def purge_event_types(last: Mapping[str, Any], now_ms: int, *, extension_types: bool = True) -> list[str]:
    """Events for a session gone from Clerk's list: ``session.expired`` only if it was open and past expiry."""
    if not is_open(last.get("status")):
        return []
    when = expiry_ms(last)
    if when is None or when > now_ms:
        return []
    return ["session.expired"] if extension_types else []


DELETED_USER_STATUS = "removed"


def deleted_user_event_type(last: Mapping[str, Any]) -> str | None:
    """The event for a session whose user was deleted: ``session.removed`` if it was still open.

    Clerk ends every session of a deleted user and lists none of them afterwards, so the last
    status we know is stale. An open session is reported removed (its data carries status
    ``removed``) so consumers that track live sessions drop it; a session that had already ended
    needs nothing.
    """
    return "session.removed" if is_open(last.get("status")) else None


def day_start_ms(now_ms: int) -> int:
    """Midnight UTC of the day containing ``now_ms``: ``last_active_at`` has day precision."""
    return now_ms - now_ms % DAY_MS


def next_sign_in_after(after: int, stamps: Sequence[int]) -> int | None:
    """Keyset step of sign-in discovery after a full page: the next exclusive lower bound.

    The newest sign-in minus one, so users tied on that millisecond are read again (and
    deduplicated) rather than skipped. None when the page cannot advance the bound (every user on
    it signed in at ``after + 1``): the caller then walks that millisecond by offset.
    """
    if not stamps:
        return None
    step = max(stamps) - 1
    return step if step > after else None


@dataclass(frozen=True, slots=True)
class CheckState:
    """One user's row of ``session_check``: what we know about their sessions."""

    user_id: str
    sign_in_ms: int | None = None
    """Latest ``last_sign_in_at`` known for the user."""
    checked_sign_in_ms: int | None = None
    """``sign_in_ms`` as it was when we last listed the user's sessions."""
    checked_ms: int | None = None
    """When we last listed the user's sessions; None: never."""
    active_ms: int | None = None
    """Latest activity known (user ``last_active_at``, sessions' ``last_active_at``)."""
    open_sessions: int = 0
    next_expiry_ms: int | None = None
    """Earliest future ``expire_at``/``abandon_at`` of an open session, as of the last check."""


def check_due(state: CheckState, now_ms: int, settings: SessionSettings) -> tuple[int, int] | None:
    """``(tier, due_ms)`` if the user's sessions should be listed now, else None."""
    if state.sign_in_ms is not None and (
        state.checked_ms is None
        or state.sign_in_ms > (-1 if state.checked_sign_in_ms is None else state.checked_sign_in_ms)
    ):
        return 0, state.sign_in_ms
    if state.open_sessions > 0 and state.checked_ms is not None:
        active_today = state.active_ms is not None and state.active_ms >= day_start_ms(now_ms)
        fresh_s = settings.fresh_active_s if active_today else settings.fresh_idle_s
        due = state.checked_ms + int(fresh_s * 1000)
        if due <= now_ms:
            return 1, due
    if state.next_expiry_ms is not None and state.next_expiry_ms <= now_ms:
        return 2, state.next_expiry_ms
    return None


def reserve_size(cap: int) -> int:
    """How many of a pass's ``cap`` checks go to the longest-waiting users."""
    return cap // RESERVE_DIVISOR


def priority_key(tier: int, due_ms: int, state: CheckState) -> tuple[int, int, str]:
    """Sort key within the tiered part: tier, then newest sign-in first (tier 0) or oldest due."""
    return (tier, -due_ms if tier == 0 else due_ms, state.user_id)


def plan_checks(states: Iterable[CheckState], now_ms: int, settings: SessionSettings, cap: int) -> list[str]:
    """The users to list this pass, at most ``cap``, in the order to list them.

    The reference implementation of the selection that ``store/session_checks.due_users`` does in
    SQL (their tests compare the two).
    """
    due = [(d, s) for s in states if (d := check_due(s, now_ms, settings)) is not None]
    by_priority = sorted(due, key=lambda ds: priority_key(ds[0][0], ds[0][1], ds[1]))
    chosen = [s.user_id for _, s in by_priority[: max(cap - reserve_size(cap), 0)]]
    taken = set(chosen)
    by_wait = sorted(due, key=lambda ds: (ds[0][1], ds[1].user_id))
    for _, s in by_wait:
        if len(chosen) >= cap:
            break
        if s.user_id not in taken:
            chosen.append(s.user_id)
            taken.add(s.user_id)
    return chosen


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What a user's current session list says for their next check."""

    open_sessions: int
    next_expiry_ms: int | None
    active_ms: int | None


def summarize(sessions: Iterable[Mapping[str, Any]], now_ms: int) -> SessionSummary:
    """Open-session count, their earliest future expiry, and the latest activity seen."""
    open_count = 0
    next_expiry: int | None = None
    active: int | None = None
    for s in sessions:
        la = s.get("last_active_at")
        if isinstance(la, int) and not isinstance(la, bool):
            active = la if active is None else max(active, la)
        if not is_open(s.get("status")):
            continue
        open_count += 1
        for key in ("expire_at", "abandon_at"):
            v = s.get(key)
            # An expiry already past was observed by this check; waiting for it again would make
            # the user due on every pass while Clerk still reports the session open.
            if isinstance(v, int) and not isinstance(v, bool) and v > now_ms:
                next_expiry = v if next_expiry is None else min(next_expiry, v)
    return SessionSummary(open_count, next_expiry, active)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """An event to build for one session: its type and the session data it carries."""

    type: str
    session_id: str
    session: dict[str, Any]
    version: int
    content_hash: str
    changed: tuple[str, ...] = ()
    """Content fields that changed (status transitions of a known session)."""
    previous: Mapping[str, Any] = field(default_factory=dict)
    """Their old values."""


@dataclass
class UserSessionsDiff:
    """One user's listed sessions sorted into mirror writes and events."""

    upserts: list[tuple[Fetched, int]] = field(default_factory=list)
    """New or changed sessions with their new version."""
    refreshed: list[Fetched] = field(default_factory=list)
    """Only volatile fields (activity) moved: rewrite the row, no event."""
    unchanged: list[str] = field(default_factory=list)
    purged: dict[str, int] = field(default_factory=dict)
    """Sessions gone from Clerk's list: id -> bumped version for the tombstone."""
    events: list[SessionEvent] = field(default_factory=list)


def diff_user_sessions(
    fetched: Sequence[Fetched],
    known: Mapping[str, Any],
    *,
    now_ms: int,
    silent_before_ms: int | None,
    listing_complete: bool = True,
    extension_types: bool = True,
) -> UserSessionsDiff:
    """Compare one user's listed sessions with their mirror rows.

    ``known`` maps session id -> mirror row (``diff.Known`` plus ``data``): the user's live rows and
    any tombstoned row of a listed id. A session first seen with ``created_at`` before
    ``silent_before_ms`` is baseline (mirrored, no event). Purges are inferred only from a
    ``listing_complete`` listing.
    """
    out = UserSessionsDiff()
    page = diff_page(fetched, dict(known))
    for f in page.created:
        k = known.get(f.object_id)
        version = 1 if k is None else k.version + 1
        out.upserts.append((f, version))
        status = f.obj.get("status")
        if k is not None:
            old_status = orjson.loads(k.data).get("status")
            types = status_event_types(old_status, status, extension_types=extension_types)
        elif silent_before_ms is not None and (f.created_at_ms or 0) < silent_before_ms:
            types = []
        else:
            types = new_session_event_types(status, extension_types=extension_types)
        out.events.extend(SessionEvent(t, f.object_id, f.obj, version, f.content_hash) for t in types)
    for f, k in page.updated:
        version = k.version + 1
        out.upserts.append((f, version))
        old = orjson.loads(k.data)
        types = status_event_types(old.get("status"), f.obj.get("status"), extension_types=extension_types)
        if types:
            names, previous = changed_fields(SESSIONS, old, f.obj)
            out.events.extend(
                SessionEvent(t, f.object_id, f.obj, version, f.content_hash, tuple(names), previous)
                for t in types
            )
    out.refreshed.extend(page.refreshed)
    out.unchanged.extend(page.unchanged)
    if listing_complete:
        listed = {f.object_id for f in fetched}
        for sid in sorted(known):
            k = known[sid]
            if sid in listed or k.deleted_ms is not None:
                continue
            version = k.version + 1
            out.purged[sid] = version
            last = orjson.loads(k.data)
            for t in purge_event_types(last, now_ms, extension_types=extension_types):
                out.events.append(
                    SessionEvent(t, sid, {**last, "status": "expired"}, version, k.content_hash)
                )
    return out
