"""The sessions pass: discover sign-ins, list the due users' sessions, mirror them, emit events.

Registered as the ``per_user`` handler of the sync engine (``SyncContext.handlers["sessions"]``),
so ``clerk-sync sync`` runs it after users like any other resource. One pass:

1. **Bookkeeping** (one transaction): give new mirrored users a ``session_check`` row; on the
   tenant's first sessions pass record the baseline start (sessions created before it are
   mirrored silently unless ``events.initial = "created"``); users the users pass tombstoned give
   ``session.removed`` for their still-open sessions (see ``session_policy.deleted_user_event_type``).
2. **Sign-in discovery**: ``GET /users?order_by=+last_sign_in_at&last_sign_in_at_after=<watermark
   minus the overlap>``, keyset-paged on ``last_sign_in_at`` (no offsets, so nothing shifts). Idle
   tenant: one request; 1,000 sign-ins: two or three.
3. **Checks**: the due users (``store/session_checks.due_users``, at most
   ``sessions.max_requests_per_pass``), listed concurrently with ``GET /sessions?user_id=…`` and
   written a batch at a time: mirror rows, events and the users' check state in one transaction.
   A listing longer than one page is taken twice and merged (offset pages shift when Clerk purges
   meanwhile) before absences count as purges. Open, unexpired sessions missing from a listing mean
   the user may be gone: one ``GET /users?user_id=…`` tells, and a deleted user is handled as in 1.

Event payloads are ``SessionEventPayload``: the session plus ``user`` (the mirrored user, else the
user as discovery or a ``GET /users?user_id=…`` returned it).

There is no separate full mode: ``--full`` / ``backfill`` run the same schedule (listing every user
on every full pass is exactly the cost this design avoids). The first passes of a tenant list every
user who ever signed in, newest sign-ins first, ``max_requests_per_pass`` at a time.

Known limit: "active today" comes from what discovery and the listings saw (the user's day-precise
``last_active_at`` at sign-in, the sessions' own ``last_active_at``). A user still active today on
a session from an earlier day, with no new sign-in, is re-checked on the idle target.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from clerk_sync import events as ev
from clerk_sync import session_policy as policy
from clerk_sync.clerk.paging import parse_page
from clerk_sync.diff import prepare
from clerk_sync.logs import log
from clerk_sync.resources import SESSIONS, USERS
from clerk_sync.store import mirror, outbox, runs, session_checks
from clerk_sync.store.db import now_ms
from clerk_sync.store.mirror import StoredObject

if TYPE_CHECKING:
    from clerk_sync.sync import PassRunner

logger = logging.getLogger("clerk_sync.sessions")

WATERMARK_SIGN_IN = "sign_in"
"""Latest ``last_sign_in_at`` discovery has seen (ms)."""
WATERMARK_BASELINE = "baseline"
"""When the tenant's first sessions pass started (ms): older sessions are baseline."""
USER_ID_BATCH = 100
"""Ids per ``GET /users?user_id=…`` (Clerk's maximum)."""
WRITE_BATCH = 100
"""Users whose listings are written in one transaction."""


async def sessions_pass(runner: PassRunner) -> None:
    """The sync engine's handler for the ``sessions`` resource."""
    await SessionsPass(runner).run()


@dataclass
class _Listing:
    items: list[dict[str, Any]]
    complete: bool


@dataclass
class _BatchState:
    """What the read phase of a batch learned from the mirror."""

    known: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    """user id -> session id -> mirror row (live rows of the user, and tombstoned rows listed again)."""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """user id -> mirrored user object (live or tombstoned)."""


class SessionsPass:
    """One sessions pass over one tenant (see the module docstring)."""

    def __init__(self, runner: PassRunner) -> None:
        self.runner = runner
        self.ctx = runner.ctx
        self.db = runner.ctx.db
        self.settings = runner.ctx.settings
        self.tenant_id = runner.tenant_id
        self.client = runner.client
        self.page_size = runner.page_size
        self.ext = self.settings.events.extension_types
        self.session_requests = 0
        self.discovery_requests = 0
        self.discovered: dict[str, dict[str, Any]] = {}
        """Users returned by discovery (payloads for users not mirrored yet)."""
        self.silent_before_ms: int | None = None

    # --- orchestration ------------------------------------------------------------------------

    async def run(self) -> None:
        """Bookkeeping, discovery, then the due checks; raises to fail the pass."""
        sign_in_wm = await asyncio.to_thread(self._prepare)
        await self._remove_deleted_users()
        await self._discover(sign_in_wm)
        cap = self.settings.sessions.max_requests_per_pass
        due = await asyncio.to_thread(self._due, cap)
        checked = 0
        for i in range(0, len(due), WRITE_BATCH):
            await self.runner.check_stop()
            if self.session_requests >= cap:
                break
            batch = due[i : i + WRITE_BATCH]
            await self._check_batch(batch)
            checked += len(batch)
        backlog = await asyncio.to_thread(self._backlog)
        log(
            logger,
            "sessions.done",
            tenant=self.runner.tenant.name,
            checked=checked,
            session_requests=self.session_requests,
            discovery_requests=self.discovery_requests,
            events=self.runner.events,
            backlog=backlog,
        )

    def _prepare(self) -> int:
        """Seed check rows, fix the baseline start; return the sign-in watermark to discover from."""
        now = now_ms()
        with self.db.transaction() as conn:
            session_checks.seed_from_users(conn, self.tenant_id)
            baseline = runs.get_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_BASELINE)
            if baseline is None:
                baseline = str(now)
                runs.set_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_BASELINE, baseline)
            wm = runs.get_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_SIGN_IN)
            if wm is None:
                seeded = session_checks.max_sign_in(conn, self.tenant_id)
                wm = str(seeded if seeded is not None else now)
                runs.set_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_SIGN_IN, wm)
        if self.settings.events.initial == "none":
            self.silent_before_ms = int(baseline)
        return int(wm)

    def _due(self, cap: int) -> list[policy.CheckState]:
        with self.db.read() as conn:
            return session_checks.due_users(conn, self.tenant_id, now_ms(), self.settings.sessions, cap)

    def _backlog(self) -> int:
        with self.db.read() as conn:
            return session_checks.count_due(conn, self.tenant_id, now_ms(), self.settings.sessions)

    # --- sign-in discovery --------------------------------------------------------------------

    async def _discover(self, watermark_ms: int) -> None:
        """Read users who signed in after the watermark (minus the overlap), oldest sign-in first.

        Keyset paging on ``last_sign_in_at``: each page continues after the newest sign-in it saw
        minus one (ties are read again and deduplicated). A full page sharing one millisecond is
        walked by offset within that millisecond, so ties never stall or skip.
        """
        after = watermark_ms - int(self.settings.sync.incremental_overlap_s * 1000)
        instant: int | None = None
        offset = 0
        while True:
            await self.runner.check_stop()
            params = [("order_by", "+last_sign_in_at"), ("limit", str(self.page_size))]
            if instant is None:
                params.append(("last_sign_in_at_after", str(after)))
            else:
                params += [
                    ("last_sign_in_at_after", str(instant - 1)),
                    ("last_sign_in_at_before", str(instant + 1)),
                    ("offset", str(offset)),
                ]
            page = await self.client.get_json(
                USERS.path, params, validate=lambda b: parse_page(b, "array", USERS.path)
            )
            self.discovery_requests += 1
            stamps = await asyncio.to_thread(self._note_sign_ins, page.items)
            full = len(page.items) >= self.page_size
            if instant is not None:
                if full:
                    offset += len(page.items)
                else:
                    after, instant, offset = instant, None, 0
                continue
            if not full:
                return
            step = policy.next_sign_in_after(after, stamps)
            if step is None:
                instant, offset = after + 1, 0
            else:
                after = step

    def _note_sign_ins(self, users: list[dict[str, Any]]) -> list[int]:
        """Record discovered sign-ins (and move the watermark); return their sign-in times."""
        notes: list[tuple[str, int | None, int | None]] = []
        for u in users:
            uid = u.get("id")
            sign_in = _int(u.get("last_sign_in_at"))
            if isinstance(uid, str) and sign_in is not None:
                self.discovered[uid] = u
                notes.append((uid, sign_in, _int(u.get("last_active_at"))))
        if not notes:
            return []
        # Ties at the newest millisecond may still be unread: resume just before it.
        mark = max(n[1] or 0 for n in notes) - 1
        with self.db.transaction() as conn:
            session_checks.note_users(conn, self.tenant_id, notes)
            old = runs.get_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_SIGN_IN)
            if old is None or int(old) < mark:
                runs.set_watermark(conn, self.tenant_id, SESSIONS.name, WATERMARK_SIGN_IN, str(mark))
        return [n[1] for n in notes if n[1] is not None]

    # --- checking a batch of users ------------------------------------------------------------

    async def _check_batch(self, batch: Sequence[policy.CheckState]) -> None:
        sem = asyncio.Semaphore(max(1, self.settings.http.max_connections))

        async def one(uid: str) -> _Listing:
            async with sem:
                return await self._list_user(uid)

        listings = dict(
            zip(
                [s.user_id for s in batch],
                await asyncio.gather(*(one(s.user_id) for s in batch)),
                strict=True,
            )
        )
        checked_ms = now_ms()
        state = await asyncio.to_thread(self._read_batch, listings)
        # Open sessions that vanished before their expiry: Clerk does not purge those, so the user
        # may be gone. Users whose payload we lack are fetched by the same request.
        suspicious = {
            uid
            for uid, listing in listings.items()
            if _lost_open_session(state.known.get(uid, {}), listing, checked_ms)
        }
        need = sorted(
            suspicious | {uid for uid in listings if uid not in state.users and uid not in self.discovered}
        )
        fetched = await self._get_users(need)
        gone = {uid for uid in suspicious if uid not in fetched}
        for uid, u in fetched.items():
            state.users.setdefault(uid, u)
        appended = await asyncio.to_thread(self._write_batch, batch, listings, state, gone, checked_ms)
        self.runner.events += appended

    async def _list_user(self, uid: str) -> _Listing:
        first, pages = await self._list_once(uid)
        if pages == 1:
            return _Listing(first, True)
        again, _ = await self._list_once(uid)
        merged = {s["id"]: s for s in again}
        merged.update({s["id"]: s for s in first if s["id"] not in merged})
        return _Listing(list(merged.values()), True)

    async def _list_once(self, uid: str) -> tuple[list[dict[str, Any]], int]:
        items: list[dict[str, Any]] = []
        offset = 0
        pages = 0
        while True:
            params = [("user_id", uid), ("limit", str(self.page_size)), ("offset", str(offset))]
            page = await self.client.get_json(
                SESSIONS.path, params, validate=lambda b: parse_page(b, "array", SESSIONS.path)
            )
            pages += 1
            self.session_requests += 1
            self.runner.pages += 1
            items.extend(s for s in page.items if isinstance(s.get("id"), str) and s.get("user_id") == uid)
            if len(page.items) < self.page_size:
                return items, pages
            offset += len(page.items)

    async def _get_users(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(user_ids), USER_ID_BATCH):
            part = user_ids[i : i + USER_ID_BATCH]
            params = [("limit", str(USER_ID_BATCH)), *(("user_id", uid) for uid in part)]
            page = await self.client.get_json(
                USERS.path, params, validate=lambda b: parse_page(b, "array", USERS.path)
            )
            wanted = set(part)
            out.update((u["id"], u) for u in page.items if u.get("id") in wanted)
        return out

    def _read_batch(self, listings: dict[str, _Listing]) -> _BatchState:
        state = _BatchState()
        uids = list(listings)
        with self.db.read() as conn:
            for row in mirror.live_with_parents(conn, self.tenant_id, SESSIONS.name, uids):
                if row.parent_id is not None:
                    state.known.setdefault(row.parent_id, {})[row.object_id] = row
            listed = {s["id"]: uid for uid, listing in listings.items() for s in listing.items}
            missing = [sid for sid, uid in listed.items() if sid not in state.known.get(uid, {})]
            for sid, row in mirror.fetch(conn, self.tenant_id, SESSIONS.name, missing).items():
                state.known.setdefault(listed[sid], {})[sid] = row
            for uid, row in mirror.fetch(conn, self.tenant_id, USERS.name, uids).items():
                state.users[uid] = orjson.loads(row.data)
        return state

    def _write_batch(
        self,
        batch: Sequence[policy.CheckState],
        listings: dict[str, _Listing],
        state: _BatchState,
        gone: set[str],
        now: int,
    ) -> int:
        rows: list[dict[str, Any]] = []
        refreshed: list[dict[str, Any]] = []
        tombstones: dict[str, int] = {}
        new_events: list[outbox.NewEvent] = []
        checks: list[tuple[policy.CheckState, int, policy.SessionSummary]] = []
        for check in batch:
            uid = check.user_id
            known = state.known.get(uid, {})
            if uid in gone:
                tombstones.update(self._removed_with_user(uid, known, state.users.get(uid), now, new_events))
                continue
            listing = listings[uid]
            fetched = [prepare(SESSIONS, s) for s in listing.items]
            d = policy.diff_user_sessions(
                fetched,
                known,
                now_ms=now,
                silent_before_ms=self.silent_before_ms,
                listing_complete=listing.complete,
                extension_types=self.ext,
            )
            rows.extend(
                mirror.live_row(self.tenant_id, f, version, now, _seen_pass(known.get(f.object_id)))
                for f, version in d.upserts
            )
            refreshed.extend(
                {
                    "b_tenant": self.tenant_id,
                    "b_resource": SESSIONS.name,
                    "b_id": f.object_id,
                    "b_data": f.data,
                    "b_updated": f.updated_at_ms,
                    "b_seen": now,
                    "b_pass": known[f.object_id].seen_pass,
                }
                for f in d.refreshed
            )
            tombstones.update(d.purged)
            user = state.users.get(uid) or self.discovered.get(uid)
            new_events.extend(
                self._event(
                    e.type,
                    e.session_id,
                    e.session,
                    user,
                    e.version,
                    e.content_hash,
                    now,
                    e.changed,
                    e.previous,
                )
                for e in d.events
            )
            checks.append((check, now, policy.summarize(listing.items, now)))
            self.runner.objects += len(fetched)
        with self.db.transaction() as conn:
            self.runner.fence(conn)
            mirror.upsert(conn, rows)
            mirror.refresh(conn, refreshed)
            mirror.tombstone(conn, self.tenant_id, SESSIONS.name, tombstones, now)
            appended = outbox.append(conn, self.tenant_id, new_events)
            session_checks.record_checks(conn, self.tenant_id, checks)
            if gone:
                session_checks.forget(conn, self.tenant_id, sorted(gone))
        return len(appended)

    # --- deleted users ------------------------------------------------------------------------

    async def _remove_deleted_users(self) -> None:
        """Sessions of users the users pass tombstoned: tombstone them, ``session.removed`` if open."""
        while True:
            await self.runner.check_stop()
            done, appended = await asyncio.to_thread(self._remove_deleted_batch)
            self.runner.events += appended
            if done:
                return

    def _remove_deleted_batch(self) -> tuple[bool, int]:
        now = now_ms()
        with self.db.transaction() as conn:
            self.runner.fence(conn)
            uids = session_checks.deleted_users_with_sessions(conn, self.tenant_id, limit=WRITE_BATCH)
            leftover = session_checks.deleted_users_with_checks(conn, self.tenant_id, limit=10_000)
            session_checks.forget(conn, self.tenant_id, leftover)
            if not uids:
                return True, 0
            users = {
                uid: orjson.loads(r.data)
                for uid, r in mirror.fetch(conn, self.tenant_id, USERS.name, uids).items()
            }
            known: dict[str, dict[str, StoredObject]] = {}
            for row in mirror.live_with_parents(conn, self.tenant_id, SESSIONS.name, uids):
                known.setdefault(row.parent_id or "", {})[row.object_id] = row
            new_events: list[outbox.NewEvent] = []
            tombstones: dict[str, int] = {}
            for uid in uids:
                tombstones.update(
                    self._removed_with_user(uid, known.get(uid, {}), users.get(uid), now, new_events)
                )
            mirror.tombstone(conn, self.tenant_id, SESSIONS.name, tombstones, now)
            appended = outbox.append(conn, self.tenant_id, new_events)
        return False, len(appended)

    def _removed_with_user(
        self,
        uid: str,
        known: dict[str, StoredObject],
        user: dict[str, Any] | None,
        now: int,
        new_events: list[outbox.NewEvent],
    ) -> dict[str, int]:
        versions: dict[str, int] = {}
        for sid in sorted(known):
            row = known[sid]
            if row.deleted_ms is not None:
                continue
            version = row.version + 1
            versions[sid] = version
            last = orjson.loads(row.data)
            type_ = policy.deleted_user_event_type(last)
            if type_ is not None:
                data = {**last, "status": policy.DELETED_USER_STATUS}
                new_events.append(self._event(type_, sid, data, user, version, row.content_hash, now))
        return versions

    # --- rows and events ----------------------------------------------------------------------

    def _event(
        self,
        type_: str,
        session_id: str,
        session: dict[str, Any],
        user: dict[str, Any] | None,
        version: int,
        content_hash: str,
        now: int,
        changed: Sequence[str] = (),
        previous: Mapping[str, Any] | None = None,
    ) -> outbox.NewEvent:
        return ev.build(
            tenant_id=self.tenant_id,
            tenant_name=self.runner.tenant.name,
            instance_id=self.runner.instance_id,
            resource=SESSIONS,
            type_=type_,
            object_id=session_id,
            data={**session, "user": user},
            version=version,
            content_hash=content_hash,
            detected_ms=now,
            changed=list(changed),
            previous=dict(previous or {}),
        )


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _lost_open_session(known: dict[str, StoredObject], listing: _Listing, now: int) -> bool:
    """Whether a session we hold as open and unexpired is missing from the user's listing."""
    listed = {s["id"] for s in listing.items}
    for sid, row in known.items():
        if sid in listed or row.deleted_ms is not None:
            continue
        last = orjson.loads(row.data)
        if policy.is_open(last.get("status")):
            when = policy.expiry_ms(last)
            if when is None or when > now:
                return True
    return False


def _seen_pass(k: StoredObject | None) -> int:
    """Sessions have no full-pass stamp of their own: keep the row's."""
    return k.seen_pass if k else 0
