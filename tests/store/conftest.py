"""Store fixtures: an open, migrated database with one tenant row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import insert

from clerk_sync.store.db import Database, now_ms, open_database
from clerk_sync.store.models import Tenant


def add_tenant(db: Database, name: str) -> int:
    """Insert a bare tenant row (no key) and return its id."""
    with db.transaction() as conn:
        return int(
            conn.execute(
                insert(Tenant.__table__).values(  # type: ignore[attr-defined]
                    name=name,
                    enabled=True,
                    key_status="ok",
                    event_seq=0,
                    created_ms=now_ms(),
                    updated_ms=now_ms(),
                )
            ).inserted_primary_key[0]
        )


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def tenant_id(db: Database) -> int:
    return add_tenant(db, "acme")
