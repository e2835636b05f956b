"""Shared fixtures: a database URL on SQLite always, and on PostgreSQL when one is configured.

``db_url`` is parametrised: ``sqlite`` (a fresh file per test) and, when
``CLERK_SYNC_TEST_PG_URL`` is set, ``postgresql`` (a fresh schema per test, dropped afterwards,
selected through the connection's ``search_path``), so store tests run on both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clerk_sync.store.db import Database, open_database

PG_ENV = "CLERK_SYNC_TEST_PG_URL"


def _pg_base() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of its own."""
    return f"sqlite:///{tmp_path / 'clerk-sync.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh schema (skips without a server)."""
    base = _pg_base()
    if base is None:
        pytest.skip(f"{PG_ENV} is not set")
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


_BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(PG_ENV) else [])


@pytest.fixture(params=_BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: SQLite always, PostgreSQL too when ``CLERK_SYNC_TEST_PG_URL`` is set."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A fresh, migrated database on every configured backend."""
    database = open_database(db_url)
    yield database
    database.dispose()
