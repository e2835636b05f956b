"""The outbox: append-only change events with a per-tenant, strictly increasing sequence.

Events are appended in the same transaction as the mirror writes that caused them, so the mirror
and the outbox never disagree. Event ids are deterministic; an id already present is skipped
(a pass re-run after a crash re-derives the same ids), and only the new events consume sequence
numbers, so sequences have no gaps from duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select, text
from sqlalchemy.dialects import postgresql, sqlite

from clerk_sync.store.models import OutboxEvent

OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]
_C = OUTBOX.c


@dataclass
class NewEvent:
    """An event ready to append: its envelope still lacks ``clerk_sync.sequence``."""

    event_id: str
    type: str
    resource: str
    object_id: str
    envelope: dict[str, Any]
    created_ms: int


@dataclass(frozen=True)
class StoredEvent:
    """An outbox row."""

    tenant_id: int
    sequence: int
    event_id: str
    type: str
    resource: str
    object_id: str
    created_ms: int
    payload: str

    def envelope(self) -> dict[str, Any]:
        """The parsed webhook-shaped payload."""
        result: dict[str, Any] = orjson.loads(self.payload)
        return result


def _existing_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = list(ids[i : i + 500])
        found.update(r[0] for r in conn.execute(select(_C.event_id).where(_C.event_id.in_(chunk))))
    return found


def append(conn: Connection, tenant_id: int, events: Sequence[NewEvent]) -> list[int]:
    """Append events not already in the outbox; return the sequences given to the new ones."""
    if not events:
        return []
    seen = _existing_ids(conn, [e.event_id for e in events])
    fresh: list[NewEvent] = []
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            fresh.append(e)
    if not fresh:
        return []
    # The row lock on the tenant serialises writers of one tenant, so sequences follow commit order.
    last = conn.execute(
        text("UPDATE tenant SET event_seq = event_seq + :n WHERE id = :id RETURNING event_seq"),
        {"n": len(fresh), "id": tenant_id},
    ).scalar_one()
    first = int(last) - len(fresh) + 1
    rows = []
    sequences = []
    for offset, e in enumerate(fresh):
        seq = first + offset
        e.envelope["clerk_sync"]["sequence"] = seq
        sequences.append(seq)
        rows.append(
            {
                "tenant_id": tenant_id,
                "sequence": seq,
                "event_id": e.event_id,
                "type": e.type,
                "resource": e.resource,
                "object_id": e.object_id,
                "created_ms": e.created_ms,
                "payload": orjson.dumps(e.envelope).decode(),
            }
        )
    ins: Any = postgresql.insert(OUTBOX) if conn.dialect.name == "postgresql" else sqlite.insert(OUTBOX)
    conn.execute(ins.on_conflict_do_nothing(index_elements=[_C.event_id]), rows)
    return sequences


def read(
    conn: Connection,
    *,
    tenant_id: int | None = None,
    types: Sequence[str] = (),
    after_sequence: int = 0,
    after_id: int = 0,
    limit: int = 100,
) -> list[tuple[int, StoredEvent]]:
    """Events in append order, as ``(row id, event)``; filter by tenant, type prefix, position."""
    q = select(
        _C.id,
        _C.tenant_id,
        _C.sequence,
        _C.event_id,
        _C.type,
        _C.resource,
        _C.object_id,
        _C.created_ms,
        _C.payload,
    )
    if after_sequence:
        q = q.where(_C.sequence > after_sequence)
    if tenant_id is not None:
        q = q.where(_C.tenant_id == tenant_id).order_by(_C.sequence)
    else:
        q = q.order_by(_C.id)
    if after_id:
        q = q.where(_C.id > after_id)
    if types:
        from sqlalchemy import or_

        conds = [(_C.type == t) if "." in t else _C.type.like(f"{t}.%") for t in types]
        q = q.where(or_(*conds))
    rows = conn.execute(q.limit(limit))
    return [(r[0], StoredEvent(*r[1:])) for r in rows]


def count(conn: Connection, tenant_id: int | None = None) -> int:
    """How many events the outbox holds (for one tenant, or all)."""
    from sqlalchemy import func

    q = select(func.count()).select_from(OUTBOX)
    if tenant_id is not None:
        q = q.where(_C.tenant_id == tenant_id)
    return int(conn.execute(q).scalar_one())
