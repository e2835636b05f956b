"""Rows that tests need as preconditions, inserted directly (no key, no Clerk call)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import Tenant


def add_tenant(db: Database, name: str, **columns: Any) -> int:
    """Insert a bare tenant row and return its id; ``columns`` override the defaults."""
    values: dict[str, Any] = {
        "name": name,
        "enabled": True,
        "key_status": "ok",
        "event_seq": 0,
        "created_ms": now_ms(),
        "updated_ms": now_ms(),
        **columns,
    }
    with db.transaction() as conn:
        return int(conn.execute(insert(Tenant.__table__).values(**values)).inserted_primary_key[0])  # type: ignore[attr-defined]
