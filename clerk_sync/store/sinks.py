"""Delivery bookkeeping: how far each sink got in each tenant's outbox, and its retry state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, insert, select, update

from clerk_sync.store import outbox
from clerk_sync.store.db import Database
from clerk_sync.store.models import OutboxEvent, SinkCursor, Tenant
from clerk_sync.store.outbox import StoredEvent

_outbox = OutboxEvent.__table__  # type: ignore[attr-defined]
_cursor = SinkCursor.__table__  # type: ignore[attr-defined]
_tenant = Tenant.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PendingStream:
    """One tenant's undelivered events for one sink."""

    tenant_id: int
    tenant: str
    delivered_seq: int
    attempts: int
    next_attempt_ms: int


def pending_streams(db: Database, sink: str) -> list[PendingStream]:
    """Tenants with events beyond this sink's cursor (a tenant never seen by the sink starts at 0)."""
    cur = _cursor.alias("c")
    latest = (
        select(_outbox.c.tenant_id, func.max(_outbox.c.sequence).label("top"))
        .group_by(_outbox.c.tenant_id)
        .subquery()
    )
    query = (
        select(
            latest.c.tenant_id,
            _tenant.c.name,
            func.coalesce(cur.c.sequence, 0),
            func.coalesce(cur.c.attempts, 0),
            func.coalesce(cur.c.next_attempt_ms, 0),
        )
        .select_from(latest)
        .join(_tenant, _tenant.c.id == latest.c.tenant_id)
        .outerjoin(cur, and_(cur.c.tenant_id == latest.c.tenant_id, cur.c.sink == sink))
        .where(latest.c.top > func.coalesce(cur.c.sequence, 0))
        .order_by(latest.c.tenant_id)
    )
    with db.read() as conn:
        return [PendingStream(*row) for row in conn.execute(query)]


def read_events(db: Database, tenant_id: int, after_seq: int, limit: int) -> list[StoredEvent]:
    """The next events of a tenant in sequence order."""
    with db.read() as conn:
        return [
            event
            for _, event in outbox.read(conn, tenant_id=tenant_id, after_sequence=after_seq, limit=limit)
        ]


def _ensure_row(conn: Connection, sink: str, tenant_id: int) -> None:
    exists = conn.execute(
        select(_cursor.c.sink).where(_cursor.c.sink == sink, _cursor.c.tenant_id == tenant_id)
    ).first()
    if not exists:
        conn.execute(
            insert(_cursor).values(sink=sink, tenant_id=tenant_id, sequence=0, attempts=0, next_attempt_ms=0)
        )


def mark_delivered(db: Database, sink: str, tenant_id: int, sequence: int) -> None:
    """Advance the cursor past ``sequence`` and clear the retry state."""
    with db.transaction() as conn:
        _ensure_row(conn, sink, tenant_id)
        conn.execute(
            update(_cursor)
            .where(_cursor.c.sink == sink, _cursor.c.tenant_id == tenant_id, _cursor.c.sequence < sequence)
            .values(sequence=sequence, attempts=0, next_attempt_ms=0, last_error=None)
        )


def mark_failed(
    db: Database, sink: str, tenant_id: int, attempts: int, next_attempt_ms: int, error: str
) -> None:
    """Record a failed attempt; the stream waits until ``next_attempt_ms``."""
    with db.transaction() as conn:
        _ensure_row(conn, sink, tenant_id)
        conn.execute(
            update(_cursor)
            .where(_cursor.c.sink == sink, _cursor.c.tenant_id == tenant_id)
            .values(attempts=attempts, next_attempt_ms=next_attempt_ms, last_error=error[:500])
        )


def undelivered_count(db: Database, tenant_id: int, sinks: list[str]) -> int:
    """Events of a tenant that at least one sink has not delivered (all events when no sinks)."""
    with db.read() as conn:
        floor = 0
        if sinks:
            rows = conn.execute(
                select(_cursor.c.sink, _cursor.c.sequence).where(
                    _cursor.c.tenant_id == tenant_id, _cursor.c.sink.in_(sinks)
                )
            ).all()
            seen = {sink: seq for sink, seq in rows}
            floor = min(seen.get(s, 0) for s in sinks)
        count = conn.execute(
            select(func.count()).where(_outbox.c.tenant_id == tenant_id, _outbox.c.sequence > floor)
        ).scalar_one()
        return int(count)
