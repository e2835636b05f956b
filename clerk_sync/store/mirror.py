"""The mirror: current state of every Clerk object per tenant, with content hashes and tombstones.

Reads are one page deep (``object_id IN (...)``, at most a few hundred ids) so a pass never holds
a whole tenant in Python; the questions about the whole tenant (deletion candidates, counts over
``created_at`` ranges) are answered by SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from clerk_sync.store.models import MirrorObject, MirrorSeen

if TYPE_CHECKING:
    from clerk_sync.diff import Fetched

MIRROR = MirrorObject.__table__  # type: ignore[attr-defined]
SEEN = MirrorSeen.__table__  # type: ignore[attr-defined]
_C = MIRROR.c
_S = SEEN.c

IN_CHUNK = 500
"""Ids per ``IN (...)`` list: well under SQLite's variable limit, one page of users."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What the differ needs of a mirror row."""

    object_id: str
    data: str
    content_hash: str
    version: int
    deleted_ms: int | None
    seen_pass: int
    parent_id: str | None = None
    created_at_ms: int | None = None


_COLUMNS = (
    _C.object_id,
    _C.data,
    _C.content_hash,
    _C.version,
    _C.deleted_ms,
    _C.seen_pass,
    _C.parent_id,
    _C.created_at_ms,
)


def _row(r: Any) -> StoredObject:
    return StoredObject(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


def _chunks(items: Sequence[str], size: int = IN_CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fetch(
    conn: Connection, tenant_id: int, resource: str, object_ids: Sequence[str]
) -> dict[str, StoredObject]:
    """Mirror rows (live or tombstoned) for these ids, by id."""
    out: dict[str, StoredObject] = {}
    for chunk in _chunks(list(object_ids)):
        rows = conn.execute(
            select(*_COLUMNS).where(
                _C.tenant_id == tenant_id, _C.resource == resource, _C.object_id.in_(list(chunk))
            )
        )
        for r in rows:
            out[r[0]] = _row(r)
    return out


def upsert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or fully replace mirror rows (each dict carries every column)."""
    if not rows:
        return
    dialect = conn.dialect.name
    ins: Any
    if dialect == "postgresql":
        ins = postgresql.insert(MIRROR)
    elif dialect == "sqlite":
        ins = sqlite.insert(MIRROR)
    else:  # pragma: no cover - open_database only accepts the two
        raise NotImplementedError(dialect)
    keep = {"tenant_id", "resource", "object_id", "first_seen_ms"}
    stmt = ins.on_conflict_do_update(
        index_elements=[_C.tenant_id, _C.resource, _C.object_id],
        set_={c.name: ins.excluded[c.name] for c in MIRROR.columns if c.name not in keep},
    )
    conn.execute(stmt, rows)


def refresh(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Rewrite data of rows whose content hash is unchanged (volatile fields moved)."""
    if not rows:
        return
    stmt = (
        update(MIRROR)
        .where(
            _C.tenant_id == bindparam("b_tenant"),
            _C.resource == bindparam("b_resource"),
            _C.object_id == bindparam("b_id"),
        )
        .values(
            data=bindparam("b_data"),
            updated_at_ms=bindparam("b_updated"),
            last_seen_ms=bindparam("b_seen"),
            seen_pass=bindparam("b_pass"),
        )
    )
    conn.execute(stmt, rows)


def mark_seen(
    conn: Connection, tenant_id: int, resource: str, object_ids: Sequence[str], pass_id: int, now_ms: int
) -> None:
    """Record that a full pass saw these objects unchanged (small inserts; the mirror rows stay)."""
    if not object_ids:
        return
    ins: Any = postgresql.insert(SEEN) if conn.dialect.name == "postgresql" else sqlite.insert(SEEN)
    conn.execute(
        ins.on_conflict_do_nothing(),
        [
            {"tenant_id": tenant_id, "resource": resource, "pass_id": pass_id, "object_id": oid}
            for oid in object_ids
        ],
    )


def clear_seen(conn: Connection, tenant_id: int, resource: str) -> None:
    """Forget every pass's seen marks for (tenant, resource): the pass that needed them is over."""
    conn.execute(delete(SEEN).where(_S.tenant_id == tenant_id, _S.resource == resource))


def _not_seen(tenant_id: int, resource: str, pass_id: int) -> Any:
    seen = (
        select(_S.object_id)
        .where(
            _S.tenant_id == tenant_id,
            _S.resource == resource,
            _S.pass_id == pass_id,
            _S.object_id == _C.object_id,
        )
        .exists()
    )
    return and_(_C.seen_pass != pass_id, ~seen)


def touch(conn: Connection, tenant_id: int, resource: str, object_ids: Sequence[str], now_ms: int) -> None:
    """Record that unchanged objects were seen (incremental passes: no pass stamp)."""
    for chunk in _chunks(list(object_ids)):
        conn.execute(
            update(MIRROR)
            .where(_C.tenant_id == tenant_id, _C.resource == resource, _C.object_id.in_(list(chunk)))
            .values(last_seen_ms=now_ms)
        )


def tombstone(conn: Connection, tenant_id: int, resource: str, versions: dict[str, int], now_ms: int) -> None:
    """Mark objects deleted, with their bumped version."""
    if not versions:
        return
    conn.execute(
        update(MIRROR)
        .where(
            _C.tenant_id == bindparam("b_tenant"),
            _C.resource == bindparam("b_resource"),
            _C.object_id == bindparam("b_id"),
        )
        .values(deleted_ms=bindparam("b_now"), version=bindparam("b_version")),
        [
            {"b_tenant": tenant_id, "b_resource": resource, "b_id": oid, "b_now": now_ms, "b_version": v}
            for oid, v in versions.items()
        ],
    )


def unseen(
    conn: Connection, tenant_id: int, resource: str, pass_id: int, *, after_id: str = "", limit: int = 100
) -> list[StoredObject]:
    """Live objects ``pass_id`` did not see, by id: deletion candidates, a batch at a time."""
    rows = conn.execute(
        select(*_COLUMNS)
        .where(
            _C.tenant_id == tenant_id,
            _C.resource == resource,
            _C.deleted_ms.is_(None),
            _C.object_id > after_id,
            _not_seen(tenant_id, resource, pass_id),
        )
        .order_by(_C.object_id)
        .limit(limit)
    )
    return [_row(r) for r in rows]


def _live(tenant_id: int, resource: str, lo_ms: int | None, hi_ms: int | None) -> Any:
    cond = [_C.tenant_id == tenant_id, _C.resource == resource, _C.deleted_ms.is_(None)]
    if lo_ms is not None:
        cond.append(_C.created_at_ms >= lo_ms)
    if hi_ms is not None:
        cond.append(_C.created_at_ms <= hi_ms)
    return and_(*cond)


def count_live(
    conn: Connection, tenant_id: int, resource: str, lo_ms: int | None = None, hi_ms: int | None = None
) -> int:
    """Live objects, optionally with ``lo_ms <= created_at_ms <= hi_ms``."""
    return int(
        conn.execute(select(func.count()).where(_live(tenant_id, resource, lo_ms, hi_ms))).scalar_one()
    )


def created_at_at(
    conn: Connection, tenant_id: int, resource: str, lo_ms: int | None, hi_ms: int | None, offset: int
) -> int | None:
    """The ``created_at_ms`` of the live object at ``offset`` (created_at order) within a range."""
    return conn.execute(
        select(_C.created_at_ms)
        .where(_live(tenant_id, resource, lo_ms, hi_ms))
        .order_by(_C.created_at_ms)
        .offset(offset)
        .limit(1)
    ).scalar()


def live_in_range(
    conn: Connection, tenant_id: int, resource: str, lo_ms: int, hi_ms: int
) -> list[StoredObject]:
    """Live objects with ``lo_ms <= created_at_ms <= hi_ms`` (callers keep ranges small)."""
    rows = conn.execute(
        select(*_COLUMNS).where(_live(tenant_id, resource, lo_ms, hi_ms)).order_by(_C.object_id)
    )
    return [_row(r) for r in rows]


def live_with_parents(
    conn: Connection, tenant_id: int, resource: str, parent_ids: Sequence[str]
) -> list[StoredObject]:
    """Live objects whose parent is one of these (memberships of some organizations)."""
    out: list[StoredObject] = []
    for chunk in _chunks(list(parent_ids)):
        rows = conn.execute(
            select(*_COLUMNS).where(
                _C.tenant_id == tenant_id,
                _C.resource == resource,
                _C.deleted_ms.is_(None),
                _C.parent_id.in_(list(chunk)),
            )
        )
        out.extend(_row(r) for r in rows)
    return out


def has_rows(conn: Connection, tenant_id: int, resource: str) -> bool:
    """Whether the mirror holds anything (live or not) for this tenant and resource."""
    return (
        conn.execute(
            select(_C.object_id).where(_C.tenant_id == tenant_id, _C.resource == resource).limit(1)
        ).first()
        is not None
    )


def get(conn: Connection, tenant_id: int, resource: str, object_id: str) -> StoredObject | None:
    """One mirror row, or None."""
    return fetch(conn, tenant_id, resource, [object_id]).get(object_id)


def unseen_with_parent(
    conn: Connection, tenant_id: int, resource: str, pass_id: int, parent_id: str
) -> list[StoredObject]:
    """Live children of ``parent_id`` that ``pass_id`` did not see."""
    rows = conn.execute(
        select(*_COLUMNS).where(
            _C.tenant_id == tenant_id,
            _C.resource == resource,
            _C.deleted_ms.is_(None),
            _C.parent_id == parent_id,
            _not_seen(tenant_id, resource, pass_id),
        )
    )
    return [_row(r) for r in rows]


def live_row(tenant_id: int, f: Fetched, version: int, now_ms: int, seen_pass: int) -> dict[str, Any]:
    """The mirror row (for ``upsert``) of a fetched object at ``version``, alive as of ``now_ms``."""
    return {
        "tenant_id": tenant_id,
        "resource": f.resource.name,
        "object_id": f.object_id,
        "data": f.data,
        "content_hash": f.content_hash,
        "version": version,
        "created_at_ms": f.created_at_ms,
        "updated_at_ms": f.updated_at_ms,
        "parent_id": f.parent_id,
        "first_seen_ms": now_ms,
        "last_seen_ms": now_ms,
        "seen_pass": seen_pass,
        "deleted_ms": None,
    }
