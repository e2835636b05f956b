"""Leases: who works on a scope (``tenant:<id>``) until when, across processes and replicas.

Portable SQL only (no advisory locks, which break behind transaction poolers): take an expired or
own lease with one conditional UPDATE, create a missing row with an insert that ignores a racing
insert, then read back who holds it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import Lease

LEASES = Lease.__table__  # type: ignore[attr-defined]
_C = LEASES.c


def acquire(db: Database, scope: str, owner: str, ttl_s: float) -> bool:
    """Take or extend the lease on ``scope`` for ``owner``; False if someone else holds it."""
    now = now_ms()
    until = now + int(ttl_s * 1000)
    with db.transaction() as conn:
        conn.execute(
            update(LEASES)
            .where(_C.scope == scope, (_C.lease_until_ms < now) | (_C.owner == owner))
            .values(owner=owner, lease_until_ms=until)
        )
        ins: Any = postgresql.insert(LEASES) if db.dialect == "postgresql" else sqlite.insert(LEASES)
        conn.execute(
            ins.values(scope=scope, owner=owner, lease_until_ms=until).on_conflict_do_nothing(
                index_elements=[_C.scope]
            )
        )
        holder = conn.execute(select(_C.owner).where(_C.scope == scope)).scalar()
    return holder == owner


def renew(db: Database, scope: str, owner: str, ttl_s: float) -> bool:
    """Extend a lease we hold; False if it was lost (expired and taken by another owner)."""
    with db.transaction() as conn:
        res = conn.execute(
            update(LEASES)
            .where(_C.scope == scope, _C.owner == owner)
            .values(lease_until_ms=now_ms() + int(ttl_s * 1000))
        )
    return bool(res.rowcount)


def hold(conn: Connection, scope: str, owner: str, ttl_s: float) -> bool:
    """Inside a write transaction: extend our lease, False if another owner has it (fencing).

    The row stays locked until the caller commits, so no one can take the lease in between: a
    process whose lease was taken (it slept past the TTL) can never commit a write afterwards.
    """
    res = conn.execute(
        update(LEASES)
        .where(_C.scope == scope, _C.owner == owner)
        .values(lease_until_ms=now_ms() + int(ttl_s * 1000))
    )
    return bool(res.rowcount)


def release(db: Database, scope: str, owner: str) -> None:
    """Give a lease up (only if we still hold it)."""
    with db.transaction() as conn:
        conn.execute(delete(LEASES).where(_C.scope == scope, _C.owner == owner))


def holder(db: Database, scope: str) -> tuple[str, int] | None:
    """Current (owner, lease_until_ms) of a scope, expired or not; None if free."""
    with db.read() as conn:
        row = conn.execute(select(_C.owner, _C.lease_until_ms).where(_C.scope == scope)).first()
    return (row[0], int(row[1])) if row else None


def take_over(db: Database, scope: str, dead_owner: str, owner: str, ttl_s: float) -> bool:
    """Take a lease from an owner known to be dead (compare-and-swap on the owner)."""
    with db.transaction() as conn:
        res = conn.execute(
            update(LEASES)
            .where(_C.scope == scope, _C.owner == dead_owner)
            .values(owner=owner, lease_until_ms=now_ms() + int(ttl_s * 1000))
        )
    return bool(res.rowcount)
