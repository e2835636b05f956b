"""Sync runs (one row per pass attempt) and watermarks.

A full pass that stops early (crash, shutdown, error) leaves its cursor; the next full pass of
the same (tenant, resource) resumes it under the same ``pass_id`` so the ``seen_pass`` stamps
already written stay valid for deletion inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from clerk_sync.store.models import SyncRun, Watermark

RUNS = SyncRun.__table__  # type: ignore[attr-defined]
WATERMARKS = Watermark.__table__  # type: ignore[attr-defined]
_R = RUNS.c
_W = WATERMARKS.c


@dataclass(frozen=True)
class Resumable:
    """An unfinished full pass to continue."""

    run_id: int
    pass_id: int
    cursor: str
    started_ms: int


def start(
    conn: Connection, tenant_id: int, resource: str, mode: str, now_ms: int, pass_id: int | None = None
) -> int:
    """Insert a running run; a fresh full pass gets its own id as ``pass_id``."""
    run_id = conn.execute(
        insert(RUNS)
        .values(
            tenant_id=tenant_id,
            resource=resource,
            mode=mode,
            started_ms=now_ms,
            status="running",
            requests=0,
            pages=0,
            objects=0,
            events=0,
            rate_limited=0,
            pass_id=pass_id,
        )
        .returning(_R.id)
    ).scalar_one()
    if pass_id is None and mode == "full":
        conn.execute(update(RUNS).where(_R.id == run_id).values(pass_id=run_id))
    return int(run_id)


def save_cursor(conn: Connection, run_id: int, cursor: str | None, **counters: int) -> None:
    """Store a full pass's resume point (in the page's transaction) and its counters so far."""
    conn.execute(update(RUNS).where(_R.id == run_id).values(cursor=cursor, **counters))


def finish(
    conn: Connection, run_id: int, status: str, now_ms: int, *, error: str | None = None, **counters: int
) -> None:
    """Close a run; a finished (ok) run keeps no cursor."""
    values: dict[str, Any] = {"status": status, "finished_ms": now_ms, "error": error, **counters}
    if status == "ok":
        values["cursor"] = None
    conn.execute(update(RUNS).where(_R.id == run_id).values(**values))


def find_resumable(conn: Connection, tenant_id: int, resource: str) -> Resumable | None:
    """The latest full run of (tenant, resource) if it stopped early with a cursor."""
    row = conn.execute(
        select(_R.id, _R.pass_id, _R.cursor, _R.status, _R.started_ms)
        .where(_R.tenant_id == tenant_id, _R.resource == resource, _R.mode == "full")
        .order_by(_R.id.desc())
        .limit(1)
    ).first()
    if row is None or row.status == "ok" or not row.cursor or row.pass_id is None:
        return None
    # A pass resumed more than once began with its first run: pages walked then saw the data as of
    # that start, so the users watermark must come from it, not from the latest resumption.
    first_ms = conn.execute(
        select(func.min(_R.started_ms)).where(
            _R.tenant_id == tenant_id, _R.resource == resource, _R.pass_id == row.pass_id
        )
    ).scalar()
    started = int(first_ms) if first_ms is not None else int(row.started_ms)
    return Resumable(run_id=row.id, pass_id=row.pass_id, cursor=row.cursor, started_ms=started)


def close_stale(conn: Connection, tenant_id: int, resource: str, now_ms: int) -> None:
    """Runs left ``running`` by a dead process (we hold the tenant's lease) become ``interrupted``."""
    conn.execute(
        update(RUNS)
        .where(_R.tenant_id == tenant_id, _R.resource == resource, _R.status == "running")
        .values(status="interrupted", finished_ms=now_ms, error="process stopped before the pass finished")
    )


def has_succeeded(conn: Connection, tenant_id: int, resource: str) -> bool:
    """Whether any pass of (tenant, resource) ever finished ``ok`` (else the next one is a baseline)."""
    return (
        conn.execute(
            select(_R.id)
            .where(_R.tenant_id == tenant_id, _R.resource == resource, _R.status == "ok")
            .limit(1)
        ).first()
        is not None
    )


def last_runs(conn: Connection, tenant_id: int | None = None, limit: int = 50) -> list[Any]:
    """Most recent runs first (for status displays)."""
    q = select(RUNS).order_by(_R.id.desc()).limit(limit)
    if tenant_id is not None:
        q = q.where(_R.tenant_id == tenant_id)
    return list(conn.execute(q))


def get_watermark(conn: Connection, tenant_id: int, resource: str, name: str) -> str | None:
    """A stored watermark value, or None."""
    return conn.execute(
        select(_W.value).where(_W.tenant_id == tenant_id, _W.resource == resource, _W.name == name)
    ).scalar()


def set_watermark(conn: Connection, tenant_id: int, resource: str, name: str, value: str) -> None:
    """Insert or replace a watermark (portable: update, then insert when nothing was there)."""
    res = conn.execute(
        update(WATERMARKS)
        .where(_W.tenant_id == tenant_id, _W.resource == resource, _W.name == name)
        .values(value=value)
    )
    if res.rowcount == 0:
        conn.execute(
            insert(WATERMARKS).values(tenant_id=tenant_id, resource=resource, name=name, value=value)
        )
