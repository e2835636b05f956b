"""One (tenant, resource) pass: walk -> diff -> mirror + events, one transaction per page.

Crash safety: a page's mirror writes, its events and (for a full pass) the pass's resume cursor
commit together, and event ids are deterministic, so a kill at any point loses nothing and a
re-run duplicates nothing. A full pass stopped early (cursor-paged users) is resumed by the next
full pass under the same pass id, keeping the seen marks already written valid. The tenant's
lease (``tenant:<id>``) keeps two processes off one tenant: it is renewed in the background while
passes run and checked (fenced) in every write transaction; a lease left by a killed process of
this host (and PID namespace) is taken over.

Deletions are inferred only after a complete, error-free full pass, from the live mirror rows the
pass did not see (rows it wrote carry ``seen_pass``; unchanged rows are listed in the small
``mirror_seen`` table instead of being rewritten), and each candidate is confirmed with Clerk
first (offset pages shift while
data changes): users by ``GET /users?user_id=…`` batches, organizations by ``GET
/organizations/{id}`` (404 = deleted), memberships by re-listing their organization, invitations
by re-walking their lists.

The incremental users pass reads ``order_by=-updated_at`` until it reaches the watermark (minus an
overlap), then detects deletions without a full walk: ``/users/count`` against the local count,
and when they differ, bisection of ``created_at`` ranges whose remote and local counts differ
until the ranges are small enough to fetch. An unchanged tenant costs two requests.

Memory stays one page deep (plus one page prefetched while the previous one commits in a worker
thread): the mirror answers the whole-tenant questions in SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import orjson
from sqlalchemy import Connection

from clerk_sync import events as ev
from clerk_sync.clerk.budget import BudgetRegistry
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.clerk.paging import parse_page
from clerk_sync.clerk.walk import walk
from clerk_sync.config import Settings
from clerk_sync.diff import changed_fields, diff_page, prepare
from clerk_sync.errors import (
    BadRequestError,
    BadResponseError,
    ClerkSyncError,
    KeyRejectedError,
    NotFoundError,
    SyncError,
)
from clerk_sync.logs import log
from clerk_sync.resources import ORGANIZATION_MEMBERSHIPS, USERS, Resource
from clerk_sync.store import leases, mirror, outbox, runs
from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.mirror import StoredObject
from clerk_sync.store.models import Tenant
from clerk_sync.store.tenants import TenantStore
from clerk_sync.vault import Keyring

logger = logging.getLogger("clerk_sync.sync")
T = TypeVar("T")

Mode = Literal["full", "incremental"]
Status = Literal["ok", "failed", "interrupted", "skipped"]

USER_ID_BATCH = 100
"""Ids per ``GET /users?user_id=…`` confirmation request (Clerk's maximum)."""
SMALL_RANGE = 100
"""Bisection stops at created_at ranges holding at most this many users, then fetches them."""
RANGE_PAGE_SIZE = 500
"""Page size for fetching a small created_at range (one request for up to 500 users)."""
WATERMARK_UPDATED_AT = "updated_at"


@dataclass
class PassResult:
    """The outcome of one pass, for logs, the CLI summary and the daemon."""

    tenant: str
    resource: str
    mode: str
    status: Status
    requests: int = 0
    pages: int = 0
    objects: int = 0
    events: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    error: str | None = None
    """One line, never a secret."""

    @property
    def ok(self) -> bool:
        """True when the pass completed."""
        return self.status == "ok"


PassHandler = Callable[["PassRunner"], Awaitable[None]]
"""A pass for a resource with its own strategy (``per_user`` sessions): gets the runner, uses its
``client``, ``apply_items`` / ``apply_deleted`` and ``check_stop``; raises to fail the pass."""


@dataclass
class SyncContext:
    """What every pass needs: settings, the store, keys, per-instance budgets, and a transport."""

    settings: Settings
    db: Database
    keyring: Keyring
    budgets: BudgetRegistry
    transport: httpx.AsyncBaseTransport | None = None
    """Injected transport (the simulator's ASGI app in tests); None = real HTTP."""
    owner: str = ""
    """Lease owner id of this process (default: replica id, else host:pid:random)."""
    handlers: dict[str, PassHandler] = field(default_factory=dict)
    """Passes for resources the generic walker cannot do (``per_user``), by resource name."""
    client_options: ClientOptions | None = None
    """Override of the client options derived from settings (tests turn backoff off)."""
    held: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Leases this process holds, with how many of its passes use each (released at zero)."""

    def __post_init__(self) -> None:
        if not self.owner:
            self.owner = self.settings.daemon.replica_id or (
                f"{_pid_scope()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            )
        if "sessions" not in self.handlers:
            # The per_user sessions pass (imported here: sessions.py imports this module).
            from clerk_sync.sessions import sessions_pass

            self.handlers["sessions"] = sessions_pass

    def supports(self, resource: Resource) -> bool:
        """Whether a pass over ``resource`` can run (``per_user`` resources need a handler)."""
        return resource.paging != "per_user" or resource.name in self.handlers

    def open_client(self, tenant: Tenant) -> ClerkClient:
        """A client for the tenant's instance, paced by the instance's shared budget."""
        key = self.keyring.decrypt_tenant_key(tenant)
        budget = self.budgets.for_instance(
            tenant.instance_id or f"tenant:{tenant.id}", tenant.environment or key.environment
        )
        options = self.client_options or ClientOptions.from_settings(self.settings)
        return ClerkClient(
            key,
            tenant.api_url or self.settings.clerk.api_url,
            budget,
            options,
            transport=self.transport,
            label=tenant.name,
        )


class _Interrupted(Exception):
    """Raised at a page boundary when the stop event is set."""


class _LeaseLostError(SyncError):
    """Another process took the tenant's lease (ours expired): stop writing."""


def _lease_scope(tenant: Tenant) -> str:
    return f"tenant:{tenant.id}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:500]


class PassRunner:
    """Runs one pass over one (tenant, resource) with an open client; tracks its counters."""

    def __init__(
        self,
        ctx: SyncContext,
        tenant: Tenant,
        resource: Resource,
        client: ClerkClient,
        mode: Mode,
        stop: asyncio.Event | None,
    ) -> None:
        assert tenant.id is not None
        self.ctx = ctx
        self.tenant = tenant
        self.tenant_id: int = tenant.id
        self.resource = resource
        self.client = client
        self.mode: Mode = mode
        self.stop = stop
        self.run_id: int | None = None
        self.pass_id: int | None = None
        self.emit = True
        self.pages = 0
        self.objects = 0
        self.events = 0
        self._requests0 = client.stats.requests
        self._limited0 = client.stats.rate_limited
        self._renewed = time.monotonic()
        self.instance_id = tenant.instance_id or ""
        self.page_size = ctx.settings.sync.page_size

    # --- counters -----------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests this pass sent (retries included)."""
        return self.client.stats.requests - self._requests0

    @property
    def rate_limited(self) -> int:
        """429 answers this pass met."""
        return self.client.stats.rate_limited - self._limited0

    def _counters(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "pages": self.pages,
            "objects": self.objects,
            "events": self.events,
            "rate_limited": self.rate_limited,
        }

    # --- page boundary ------------------------------------------------------------------------

    async def check_stop(self) -> None:
        """Raise at a page boundary when asked to stop; renew the tenant's lease when due."""
        if self.stop is not None and self.stop.is_set():
            raise _Interrupted()
        ttl_s = self.ctx.settings.daemon.lease_ttl_s
        if time.monotonic() - self._renewed > ttl_s / 3:
            ok = await asyncio.to_thread(
                leases.renew, self.ctx.db, _lease_scope(self.tenant), self.ctx.owner, ttl_s
            )
            if not ok:
                raise _LeaseLostError(f"lost the lease on tenant {self.tenant.name} to another process")
            self._renewed = time.monotonic()

    # --- writes (each call is one transaction, run in a worker thread) --------------------------

    def fence(self, conn: Connection) -> None:
        """First statement of every write transaction: raise unless we still hold the tenant's lease."""
        scope = _lease_scope(self.tenant)
        if not leases.hold(conn, scope, self.ctx.owner, self.ctx.settings.daemon.lease_ttl_s):
            raise _LeaseLostError(f"lost the lease on tenant {self.tenant.name} to another process")

    async def apply_items(
        self,
        items: Sequence[dict[str, Any]],
        *,
        stamp: bool,
        cursor: str | Literal[False] | None = False,
        resource: Resource | None = None,
    ) -> int:
        """Diff fetched objects against the mirror and commit rows + events (+ cursor) at once.

        ``stamp`` marks them seen by this full pass; ``cursor`` (unless False) is stored as the
        pass's resume point in the same transaction. Returns the number of events appended.
        """
        return await asyncio.to_thread(
            self._apply_items, list(items), stamp, cursor, resource or self.resource
        )

    def _apply_items(
        self,
        items: list[dict[str, Any]],
        stamp: bool,
        cursor: str | Literal[False] | None,
        resource: Resource,
    ) -> int:
        fetched = [prepare(resource, item) for item in items]
        now = now_ms()
        pass_id = self.pass_id if stamp else None
        settings = self.ctx.settings.events
        with self.ctx.db.transaction() as conn:
            self.fence(conn)
            known = mirror.fetch(conn, self.tenant_id, resource.name, [f.object_id for f in fetched])
            d = diff_page(fetched, known)
            rows: list[dict[str, Any]] = []
            new_events: list[outbox.NewEvent] = []
            for f in d.created:
                k = known.get(f.object_id)
                version = k.version + 1 if k else 1
                rows.append(mirror.live_row(self.tenant_id, f, version, now, _seen(pass_id, k)))
                if self.emit:
                    for t in ev.event_types(
                        resource, "created", None, f.obj, extension_types=settings.extension_types
                    ):
                        new_events.append(
                            self._event(resource, t, f.object_id, f.obj, version, f.content_hash, now)
                        )
            for f, prior in d.updated:
                version = prior.version + 1
                rows.append(
                    mirror.live_row(self.tenant_id, f, version, now, _seen(pass_id, known[f.object_id]))
                )
                if self.emit:
                    old = orjson.loads(prior.data)
                    types = ev.event_types(
                        resource, "updated", old, f.obj, extension_types=settings.extension_types
                    )
                    if types:
                        names, previous = changed_fields(resource, old, f.obj)
                        for t in types:
                            new_events.append(
                                self._event(
                                    resource,
                                    t,
                                    f.object_id,
                                    f.obj,
                                    version,
                                    f.content_hash,
                                    now,
                                    names,
                                    previous,
                                )
                            )
            mirror.upsert(conn, rows)
            mirror.refresh(
                conn,
                [
                    {
                        "b_tenant": self.tenant_id,
                        "b_resource": resource.name,
                        "b_id": f.object_id,
                        "b_data": f.data,
                        "b_updated": f.updated_at_ms,
                        "b_seen": now,
                        "b_pass": pass_id if pass_id is not None else known[f.object_id].seen_pass,
                    }
                    for f in d.refreshed
                ],
            )
            if pass_id is not None:
                mirror.mark_seen(conn, self.tenant_id, resource.name, d.unchanged, pass_id, now)
            appended = outbox.append(conn, self.tenant_id, new_events)
            self.events += len(appended)
            self.objects += len(fetched)
            if cursor is not False and self.run_id is not None:
                self.pages += 1
                runs.save_cursor(conn, self.run_id, cursor, **self._counters())
        return len(appended)

    def _event(
        self,
        resource: Resource,
        type_: str,
        object_id: str,
        data: dict[str, Any],
        version: int,
        content_hash: str,
        now: int,
        changed: list[str] | None = None,
        previous: dict[str, Any] | None = None,
    ) -> outbox.NewEvent:
        return ev.build(
            tenant_id=self.tenant_id,
            tenant_name=self.tenant.name,
            instance_id=self.instance_id,
            resource=resource,
            type_=type_,
            object_id=object_id,
            data=data,
            version=version,
            content_hash=content_hash,
            detected_ms=now,
            changed=changed,
            previous=previous,
        )

    async def apply_deleted(self, gone: Sequence[StoredObject], resource: Resource | None = None) -> int:
        """Tombstone confirmed deletions and append their ``*.deleted`` events, in one transaction."""
        if not gone:
            return 0
        return await asyncio.to_thread(self._apply_deleted, list(gone), resource or self.resource)

    def _apply_deleted(self, gone: list[StoredObject], resource: Resource) -> int:
        now = now_ms()
        new_events: list[outbox.NewEvent] = []
        versions: dict[str, int] = {}
        ext = self.ctx.settings.events.extension_types
        for g in gone:
            version = g.version + 1
            versions[g.object_id] = version
            if self.emit:
                last = orjson.loads(g.data)
                for t in ev.event_types(resource, "deleted", last, None, extension_types=ext):
                    data = ev.deleted_data(resource, last, g.object_id)
                    new_events.append(
                        self._event(resource, t, g.object_id, data, version, g.content_hash, now)
                    )
        with self.ctx.db.transaction() as conn:
            self.fence(conn)
            mirror.tombstone(conn, self.tenant_id, resource.name, versions, now)
            appended = outbox.append(conn, self.tenant_id, new_events)
        self.events += len(appended)
        return len(appended)

    # --- the pass -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the pass (full or incremental) to completion; raises on failure or interruption."""
        handler = self.ctx.handlers.get(self.resource.name)
        if handler is not None:
            await self._start_run(self.mode)
            await handler(self)
            return
        if self.resource.paging == "per_user":
            raise SyncError(f"no pass handler for the {self.resource.name} resource")
        if self.mode == "incremental" and self.resource.name == USERS.name:
            started = await asyncio.to_thread(self._incremental_possible)
            if started is not None:
                await self._incremental_users(started)
                return
        self.mode = "full"
        await self._full()

    async def _start_run(self, mode: Mode, pass_id: int | None = None) -> None:
        def start() -> tuple[int, int | None, bool]:
            with self.ctx.db.transaction() as conn:
                baseline = not runs.has_succeeded(conn, self.tenant_id, self.resource.name)
                run_id = runs.start(conn, self.tenant_id, self.resource.name, mode, now_ms(), pass_id)
                pid = pass_id if pass_id is not None else (run_id if mode == "full" else None)
                return run_id, pid, baseline

        self.run_id, self.pass_id, baseline = await asyncio.to_thread(start)
        self.emit = not baseline or self.ctx.settings.events.initial == "created"

    def _incremental_possible(self) -> int | None:
        with self.ctx.db.read() as conn:
            wm = runs.get_watermark(conn, self.tenant_id, USERS.name, WATERMARK_UPDATED_AT)
            if wm is None or not runs.has_succeeded(conn, self.tenant_id, USERS.name):
                return None
        return int(wm)

    async def _full(self) -> None:
        def prepare_run() -> runs.Resumable | None:
            with self.ctx.db.transaction() as conn:
                resumable = runs.find_resumable(conn, self.tenant_id, self.resource.name)
                runs.close_stale(conn, self.tenant_id, self.resource.name, now_ms())
            return resumable

        resumable = await asyncio.to_thread(prepare_run)
        after: str | None = None
        started_ms = now_ms()
        if resumable is not None and self.resource.paging == "cursor":
            after = orjson.loads(resumable.cursor).get("after")
            started_ms = resumable.started_ms
            await self._start_run("full", resumable.pass_id)
            log(logger, "sync.resume", tenant=self.tenant.name, resource=self.resource.name, after=after)
        else:
            await self._start_run("full")
        try:
            await self._walk_pages(after)
        except (BadRequestError, NotFoundError) as exc:
            if after is None or self.pages:
                raise
            # Clerk refused the stored cursor (e.g. that user is gone): start the pass afresh.
            log(
                logger,
                "sync.resume_refused",
                tenant=self.tenant.name,
                resource=self.resource.name,
                error=_one_line(exc),
            )
            await asyncio.to_thread(
                _finish, self.ctx, self, "failed", f"resume cursor refused: {_one_line(exc)}"
            )
            await self._start_run("full")
            started_ms = now_ms()
            await self._walk_pages(None)
        await self._infer_deletions()
        await asyncio.to_thread(self._clear_seen)
        if self.resource.name == USERS.name:
            await asyncio.to_thread(self._set_watermark, started_ms)

    async def _walk_pages(self, after: str | None) -> None:
        pages = walk(self.client, self.resource, self.page_size, after_cursor=after)
        async for page in prefetch(pages):
            token: str | None = None
            if self.resource.paging == "cursor" and not page.walk_params and page.next_cursor is not None:
                token = orjson.dumps({"after": page.next_cursor}).decode()
            await self.apply_items(page.items, stamp=True, cursor=token)
            await self.check_stop()

    def _clear_seen(self) -> None:
        with self.ctx.db.transaction() as conn:
            mirror.clear_seen(conn, self.tenant_id, self.resource.name)

    def _set_watermark(self, value_ms: int) -> None:
        with self.ctx.db.transaction() as conn:
            runs.set_watermark(conn, self.tenant_id, USERS.name, WATERMARK_UPDATED_AT, str(value_ms))

    # --- deletions after a complete full pass -------------------------------------------------

    async def _candidates(self, after_id: str, limit: int = USER_ID_BATCH) -> list[StoredObject]:
        assert self.pass_id is not None
        pass_id = self.pass_id

        def read() -> list[StoredObject]:
            with self.ctx.db.read() as conn:
                return mirror.unseen(
                    conn, self.tenant_id, self.resource.name, pass_id, after_id=after_id, limit=limit
                )

        return await asyncio.to_thread(read)

    async def _infer_deletions(self) -> None:
        name = self.resource.name
        after = ""
        rewalked = False
        while True:
            batch = await self._candidates(after)
            if not batch:
                return
            after = batch[-1].object_id
            if name == "users":
                await self._confirm_users(batch, stamp=True)
            elif name == "organizations":
                await self._confirm_organizations(batch)
            elif name == "organization_memberships":
                await self._confirm_memberships(batch)
            else:
                # Small lists (invitations): walk everything once more, then the unseen are gone.
                if not rewalked:
                    rewalked = True
                    async for page in walk(self.client, self.resource, self.page_size):
                        await self.apply_items(page.items, stamp=True)
                        await self.check_stop()
                    after = ""
                    continue
                await self.apply_deleted(batch)
            await self.check_stop()

    async def _confirm_users(self, batch: Sequence[StoredObject], *, stamp: bool) -> None:
        """Ask Clerk for these user ids: the ones returned are alive (diffed), the others deleted."""
        for i in range(0, len(batch), USER_ID_BATCH):
            part = batch[i : i + USER_ID_BATCH]
            params = [("limit", str(USER_ID_BATCH)), *(("user_id", b.object_id) for b in part)]
            body = await self.client.get_json(
                USERS.path, params, validate=lambda b: parse_page(b, "array", USERS.path)
            )
            wanted = {b.object_id for b in part}
            alive = [item for item in body.items if item["id"] in wanted]
            found = {item["id"] for item in alive}
            await self.apply_items(alive, stamp=stamp)
            await self.apply_deleted([b for b in part if b.object_id not in found])

    async def _confirm_organizations(self, batch: Sequence[StoredObject]) -> None:
        alive: list[dict[str, Any]] = []
        gone: list[StoredObject] = []
        for b in batch:
            try:
                org = await self.client.get_json(f"{self.resource.path}/{b.object_id}")
            except NotFoundError:
                gone.append(b)
                continue
            if isinstance(org, dict) and org.get("id") == b.object_id:
                alive.append(org)
            else:
                gone.append(b)
        await self.apply_items(alive, stamp=True)
        await self.apply_deleted(gone)

    async def _confirm_memberships(self, batch: Sequence[StoredObject]) -> None:
        assert self.pass_id is not None
        orphans = [b for b in batch if not b.parent_id]
        await self.apply_deleted(orphans)
        for org_id in sorted({b.parent_id for b in batch if b.parent_id}):
            per_org = dataclasses.replace(
                ORGANIZATION_MEMBERSHIPS, path=f"/organizations/{org_id}/memberships", base_params=()
            )
            present: set[str] = set()
            try:
                async for page in walk(self.client, per_org, self.page_size):
                    present.update(item["id"] for item in page.items)
                    await self.apply_items(page.items, stamp=True, resource=ORGANIZATION_MEMBERSHIPS)
            except NotFoundError:
                present = set()

            def unseen_of_org(org: str = org_id, pass_id: int = self.pass_id) -> list[StoredObject]:
                with self.ctx.db.read() as conn:
                    return mirror.unseen_with_parent(
                        conn, self.tenant_id, ORGANIZATION_MEMBERSHIPS.name, pass_id, org
                    )

            stale = await asyncio.to_thread(unseen_of_org)
            await self.apply_deleted([r for r in stale if r.object_id not in present])

    # --- incremental users --------------------------------------------------------------------

    async def _incremental_users(self, watermark_ms: int) -> None:
        await self._start_run("incremental")
        overlap_ms = int(self.ctx.settings.sync.incremental_overlap_s * 1000)
        threshold = watermark_ms - overlap_ms
        newest = watermark_ms
        offset = 0
        anchor: str | None = None
        shifted = False
        while True:
            params = [("order_by", "-updated_at"), ("limit", str(self.page_size)), ("offset", str(offset))]
            page = await self.client.get_json(
                USERS.path, params, validate=lambda b: parse_page(b, "array", USERS.path)
            )
            items = page.items
            if offset == 0 and items and isinstance(items[0].get("updated_at"), int):
                newest = max(newest, int(items[0]["updated_at"]))
            if anchor is not None and not any(i.get("id") == anchor for i in items):
                # Users ahead of the walk were deleted (or the anchor was updated): the offset
                # moved back and a user may have been skipped. Keep the old watermark so the next
                # pass reads this stretch again instead of stepping over an unseen update.
                shifted = True
            fresh = [
                i for i in items if isinstance(i.get("updated_at"), int) and i["updated_at"] >= threshold
            ]
            await self.apply_items(fresh, stamp=False, cursor=None)
            await self.check_stop()
            if len(fresh) < len(items) or len(items) < self.page_size:
                break
            # Overlap pages by one user: the next page must contain this page's last one (the users
            # after it are then its direct successors), else the walk shifted.
            last_id = items[-1].get("id")
            anchor = last_id if self.page_size > 1 and isinstance(last_id, str) else None
            offset += len(items) - (1 if anchor is not None else 0)
        await self._reconcile_user_counts()
        await asyncio.to_thread(self._set_watermark, watermark_ms if shifted else newest)

    async def _remote_count(self, lo_ms: int | None = None, hi_ms: int | None = None) -> int:
        params: list[tuple[str, str]] = []
        if lo_ms is not None:
            params.append(("created_at_after", str(lo_ms - 1)))
        if hi_ms is not None:
            params.append(("created_at_before", str(hi_ms + 1)))

        def check(body: Any) -> int:
            total = body.get("total_count") if isinstance(body, dict) else None
            if isinstance(total, bool) or not isinstance(total, int):
                raise BadResponseError("Clerk's answer to GET /users/count has no total_count; retrying")
            return total

        result: int = await self.client.get_json(USERS.count_path or "/users/count", params, validate=check)
        return result

    async def _local(self, fn: Callable[..., Any], *args: Any) -> Any:
        def read() -> Any:
            with self.ctx.db.read() as conn:
                return fn(conn, self.tenant_id, USERS.name, *args)

        return await asyncio.to_thread(read)

    async def _reconcile_user_counts(self) -> None:
        """Find deletions (and missed creations) by comparing counts over created_at ranges."""
        remote = await self._remote_count()
        local = await self._local(mirror.count_live)
        if remote == local:
            return
        total = max(remote, local, 1)
        depth = max(1, math.ceil(math.log2(max(total / SMALL_RANGE, 2))))
        if abs(remote - local) * (depth + 2) > total / self.page_size:
            # Too many differences for bisection to be cheaper than walking everything.
            log(logger, "sync.incremental_fallback", tenant=self.tenant.name, remote=remote, local=local)
            await self._full_reconcile()
            return
        stack: list[tuple[int | None, int | None, int, int]] = [(None, None, remote, local)]
        while stack:
            lo, hi, r, n = stack.pop()
            if r == n:
                continue
            await self.check_stop()
            if n <= SMALL_RANGE or (lo is not None and lo == hi):
                await self._fetch_range(lo, hi)
                continue
            mid = await self._local(mirror.created_at_at, lo, hi, n // 2)
            if mid is None or (hi is not None and mid >= hi):
                await self._fetch_range(lo, hi)
                continue
            left_n = await self._local(mirror.count_live, lo, mid)
            left_r = await self._remote_count(lo, mid)
            stack.append((mid + 1, hi, r - left_r, n - left_n))
            stack.append((lo, mid, left_r, left_n))

    async def _fetch_range(self, lo: int | None, hi: int | None) -> None:
        params: list[tuple[str, str]] = []
        if lo is not None:
            params.append(("created_at_after", str(lo - 1)))
        if hi is not None:
            params.append(("created_at_before", str(hi + 1)))
        present: set[str] = set()
        async for page in walk(self.client, USERS, RANGE_PAGE_SIZE, params=params):
            present.update(item["id"] for item in page.items)
            await self.apply_items(page.items, stamp=False)
        lo_q = lo if lo is not None else -(2**62)
        hi_q = hi if hi is not None else 2**62
        local = await self._local(mirror.live_in_range, lo_q, hi_q)
        missing = [row for row in local if row.object_id not in present]
        if missing:
            await self._confirm_users(missing, stamp=False)

    async def _full_reconcile(self) -> None:
        """A full users walk inside an incremental pass, when counts differ too much."""
        assert self.run_id is not None
        self.pass_id = self.run_id
        async for page in walk(self.client, USERS, self.page_size):
            await self.apply_items(page.items, stamp=True)
            await self.check_stop()
        await self._infer_deletions()
        await asyncio.to_thread(self._clear_seen)


async def prefetch(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield from ``pages`` while the next one is already being fetched.

    A page's commit (in a worker thread) then overlaps the next request instead of following it;
    memory is two pages deep. The pending fetch is cancelled if the consumer stops early.
    """
    it = aiter(pages)
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(it))
    try:
        while True:
            try:
                item = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(it))
            yield item
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
        elif not pending.cancelled():
            pending.exception()  # retrieved, so asyncio does not log "Task exception was never retrieved"
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def _seen(pass_id: int | None, k: StoredObject | None) -> int:
    """The ``seen_pass`` to write: this full pass, else whatever the row had."""
    return pass_id if pass_id is not None else (k.seen_pass if k else 0)


# --- public entry points ---------------------------------------------------------------------


def _finish(ctx: SyncContext, runner: PassRunner, status: Status, error: str | None) -> None:
    if runner.run_id is None:
        return
    with ctx.db.transaction() as conn:
        runs.finish(conn, runner.run_id, status, now_ms(), error=error, **runner._counters())


async def _run_with_client(
    ctx: SyncContext,
    tenant: Tenant,
    resource: Resource,
    client: ClerkClient,
    mode: Mode,
    stop: asyncio.Event | None,
) -> tuple[PassResult, BaseException | None]:
    started = time.monotonic()
    runner = PassRunner(ctx, tenant, resource, client, mode, stop)
    status: Status = "ok"
    error: str | None = None
    failure: BaseException | None = None
    try:
        await runner.run()
    except asyncio.CancelledError:
        # Cancelled at the shutdown deadline (e.g. in a long retry wait): committed pages stay,
        # and the run row must not stay "running"; record it even though we are being cancelled.
        with contextlib.suppress(Exception):
            await asyncio.shield(
                asyncio.to_thread(_finish, ctx, runner, "interrupted", "cancelled at the shutdown deadline")
            )
        raise
    except _Interrupted:
        status, error = "interrupted", "stopped at a page boundary"
    except KeyRejectedError as exc:
        status, error, failure = (
            "failed",
            f"tenant {tenant.name} quarantined (skipped until re-enrolled): {_one_line(exc)}",
            exc,
        )
        assert tenant.id is not None
        await asyncio.to_thread(TenantStore(ctx.db).mark_key_rejected, tenant.id, exc.code)
    except (ClerkSyncError, ValueError) as exc:
        status, error, failure = "failed", _one_line(exc), exc
    except Exception as exc:  # a bug must not take other tenants down
        status, error, failure = "failed", f"unexpected {type(exc).__name__}: {_one_line(exc)}", exc
        logger.exception("sync.bug tenant=%s resource=%s", tenant.name, resource.name)
    try:
        await asyncio.to_thread(_finish, ctx, runner, status, error)
    except ClerkSyncError as exc:
        status, error, failure = "failed", _one_line(exc), exc
    result = PassResult(
        tenant=tenant.name,
        resource=resource.name,
        mode=runner.mode,
        status=status,
        requests=runner.requests,
        pages=runner.pages,
        objects=runner.objects,
        events=runner.events,
        rate_limited=runner.rate_limited,
        seconds=round(time.monotonic() - started, 3),
        error=error,
    )
    log(
        logger,
        "sync.pass",
        logging.INFO if status in ("ok", "interrupted") else logging.WARNING,
        tenant=tenant.name,
        resource=resource.name,
        mode=result.mode,
        requests=result.requests,
        pages=result.pages,
        objects=result.objects,
        events=result.events,
        rate_limited=result.rate_limited,
        s=result.seconds,
        result=status,
        **({"error": error} if error else {}),
    )
    return result, failure


def _skipped(tenant: Tenant, resource: Resource, mode: str, reason: str) -> PassResult:
    return PassResult(tenant=tenant.name, resource=resource.name, mode=mode, status="skipped", error=reason)


async def _acquire(ctx: SyncContext, tenant: Tenant) -> str | None:
    """Take the tenant's lease (shared by this process's passes); None on success, else why not."""
    scope = _lease_scope(tenant)
    if ctx.held.get(scope):
        ctx.held[scope] += 1
        return None
    ok = await asyncio.to_thread(leases.acquire, ctx.db, scope, ctx.owner, ctx.settings.daemon.lease_ttl_s)
    if ok:
        ctx.held[scope] = ctx.held.get(scope, 0) + 1
        return None
    held = await asyncio.to_thread(leases.holder, ctx.db, scope)
    who = held[0] if held else "another process"
    if held and _owner_is_dead(who):
        # kill -9 leaves the lease behind; a dead process on this host cannot be syncing.
        took = await asyncio.to_thread(
            leases.take_over, ctx.db, scope, who, ctx.owner, ctx.settings.daemon.lease_ttl_s
        )
        if took:
            log(logger, "sync.lease_taken_over", tenant=tenant.name, dead_owner=who)
            ctx.held[scope] = ctx.held.get(scope, 0) + 1
            return None
    return f"tenant {tenant.name} is being synced by {who}"


def _pid_scope() -> str:
    """Where our pids mean something: the hostname plus the PID namespace (Linux).

    Containers sharing a hostname (host networking) have separate PID namespaces: a pid missing
    here may be a live process there, so only owners of our own namespace can be judged dead.
    """
    host = socket.gethostname()
    try:
        ns = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return host
    return f"{host}/{ns.removeprefix('pid:[').removesuffix(']').replace(':', '')}"


def _owner_is_dead(owner: str) -> bool:
    """True if ``owner`` names a process of this host (and PID namespace) that no longer exists."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != _pid_scope() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _release(ctx: SyncContext, tenant: Tenant) -> None:
    scope = _lease_scope(tenant)
    ctx.held[scope] = ctx.held.get(scope, 1) - 1
    if ctx.held[scope] > 0:
        return
    del ctx.held[scope]
    try:
        await asyncio.to_thread(leases.release, ctx.db, scope, ctx.owner)
    except ClerkSyncError as exc:  # the lease expires on its own
        log(logger, "sync.lease_release_failed", logging.WARNING, tenant=tenant.name, error=_one_line(exc))


async def _sync_tenant(
    ctx: SyncContext,
    tenant: Tenant,
    resources: Sequence[Resource],
    mode: Mode,
    stop: asyncio.Event | None,
    on_pass: Callable[[PassResult], None] | None = None,
) -> list[PassResult]:
    """Every pass of one tenant under its lease; ``on_pass`` hears each pass that ran."""
    busy = await _acquire(ctx, tenant)
    if busy is not None:
        log(logger, "sync.skipped", tenant=tenant.name, reason=busy)
        return [_skipped(tenant, r, mode, busy) for r in resources]
    results: list[PassResult] = []
    keeper = asyncio.create_task(_keep_lease(ctx, tenant))
    try:
        try:
            client = ctx.open_client(tenant)
        except ClerkSyncError as exc:
            msg = _one_line(exc)
            log(logger, "sync.pass", logging.WARNING, tenant=tenant.name, result="failed", error=msg)
            return [PassResult(tenant.name, r.name, mode, "failed", error=msg) for r in resources]
        async with client:
            for i, resource in enumerate(resources):
                if stop is not None and stop.is_set():
                    results += [_skipped(tenant, r, mode, "shutting down") for r in resources[i:]]
                    break
                if not ctx.supports(resource):
                    results.append(_skipped(tenant, resource, mode, f"{resource.name} is not synced yet"))
                    continue
                result, failure = await _run_with_client(ctx, tenant, resource, client, mode, stop)
                results.append(result)
                if on_pass is not None:
                    on_pass(result)
                if isinstance(failure, KeyRejectedError):
                    reason = "the tenant's key was rejected"
                    results += [_skipped(tenant, r, mode, reason) for r in resources[i + 1 :]]
                    break
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await _release(ctx, tenant)
    return results


async def _keep_lease(ctx: SyncContext, tenant: Tenant) -> None:
    """Renew the tenant's lease every third of its TTL while its passes run.

    Page boundaries (``check_stop``) are not enough: one request in retries (an outage, long
    Retry-After waits) can outlast the TTL, and another process would then take the tenant.
    A lost lease ends the renewals; the pass's next ``check_stop`` sees it and stops.
    """
    ttl_s = ctx.settings.daemon.lease_ttl_s
    scope = _lease_scope(tenant)
    while True:
        await asyncio.sleep(ttl_s / 3)
        try:
            ok = await asyncio.to_thread(leases.renew, ctx.db, scope, ctx.owner, ttl_s)
        except ClerkSyncError as exc:  # try again at the next tick; the lease still runs
            log(logger, "sync.lease_renew_failed", logging.WARNING, tenant=tenant.name, error=_one_line(exc))
            continue
        if not ok:
            return


def default_handlers() -> dict[str, PassHandler]:
    """Passes for resources with their own strategy, from the modules that provide them.

    Convention: a module exposing ``pass_handler(runner: PassRunner)`` registers the resource named
    by its ``RESOURCE`` (sessions: ``clerk_sync.sessions``).
    """
    import importlib

    handlers: dict[str, PassHandler] = {}
    for module_name in ("clerk_sync.sessions",):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        handler = getattr(module, "pass_handler", None)
        resource = getattr(module, "RESOURCE", None)
        if callable(handler):
            name = resource.name if isinstance(resource, Resource) else str(resource or "sessions")
            handlers[name] = handler
    return handlers


def order_resources(resources: Sequence[Resource]) -> list[Resource]:
    """Resources with each one's ``depends_on`` first (stable otherwise)."""
    by_name = {r.name: r for r in resources}
    out: list[Resource] = []
    seen: set[str] = set()

    def visit(r: Resource) -> None:
        if r.name in seen:
            return
        seen.add(r.name)
        for dep in r.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        out.append(r)

    for r in resources:
        visit(r)
    return out


async def run_pass(
    ctx: SyncContext,
    tenant: Tenant,
    resource: Resource,
    mode: Mode = "full",
    stop: asyncio.Event | None = None,
) -> PassResult:
    """One pass over one (tenant, resource), under the tenant's lease; never raises for Clerk errors."""
    results = await _sync_tenant(ctx, tenant, [resource], mode, stop)
    return results[0]


async def sync_tenants(
    ctx: SyncContext,
    tenants: Sequence[Tenant],
    resources: Sequence[Resource],
    full: bool = False,
    stop: asyncio.Event | None = None,
    *,
    on_result: Callable[[PassResult], None] | None = None,
) -> list[PassResult]:
    """Sync many tenants, at most ``sync.concurrency`` at once; one tenant's failure stays its own.

    Resources run in dependency order per tenant; ``full`` makes every pass a full one (else
    users run incrementally once they have a baseline). ``on_result`` is called once per pass, as
    it ends (progress bars).
    """
    mode: Mode = "full" if full else "incremental"
    ordered = order_resources(resources)
    sem = asyncio.Semaphore(ctx.settings.sync.concurrency)

    async def one(tenant: Tenant) -> list[PassResult]:
        heard: set[int] = set()

        def hear(r: PassResult) -> None:
            heard.add(id(r))
            if on_result is not None:
                on_result(r)

        async with sem:
            results = await _sync_tenant(ctx, tenant, ordered, mode, stop, hear)
        for r in results:
            if id(r) not in heard:  # passes that never ran (busy tenant, rejected key …)
                hear(r)
        return results

    per_tenant = await asyncio.gather(*(one(t) for t in tenants))
    return [r for rs in per_tenant for r in rs]


__all__ = [
    "PassHandler",
    "PassResult",
    "PassRunner",
    "SyncContext",
    "default_handlers",
    "order_resources",
    "run_pass",
    "sync_tenants",
]
