"""Engine creation and schema migrations, for SQLite (embedded default) and PostgreSQL.

SQLite: WAL so readers (``status``, ``events``) run beside the writer, ``busy_timeout`` on every
connection, and every transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write
transaction never fails half-way with "database is locked" (see REFERENCE.md). The database file
is created 0600 (SQLite gives its -wal/-shm files the same mode) in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlmodel import SQLModel

from clerk_sync.errors import StoreError
from clerk_sync.store import models  # noqa: F401  (registers the tables)


def now_ms() -> int:
    """Current Unix time in milliseconds."""
    return int(time.time() * 1000)


def _prepare_sqlite_file(path: Path) -> None:
    # Never create the directory here: a mistyped state_dir or database.url must be an error, not a
    # fresh empty database (``clerk-sync init`` creates the directory, 0700).
    if not path.parent.is_dir():
        raise StoreError(
            f"the database directory {path.parent} does not exist: run `clerk-sync init` "
            "(or fix state_dir / database.url)"
        )
    if not path.exists():
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot create the database file {path}: {exc.strerror} "
                "(check state_dir / database.url and who owns the directory)"
            ) from None
        os.close(fd)


@dataclass
class Database:
    """An engine plus what callers need to know about its dialect."""

    engine: Engine
    url: str

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(f"database error on {self.safe_url}: {exc.orig}") from None

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (still a transaction, so reads are consistent)."""
        with self.transaction() as conn:
            yield conn

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def open_database(
    url: str, *, busy_timeout_s: float = 30.0, pool_size: int = 5, migrate: bool = True
) -> Database:
    """Create the engine (and the SQLite file, 0600), then bring the schema up to date."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"database.url is not a valid SQLAlchemy URL: {url.split('@')[-1]!r}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _prepare_sqlite_file(Path(parsed.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "isolation_level": None, "timeout": busy_timeout_s},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        except ModuleNotFoundError:
            raise StoreError(
                "PostgreSQL needs the psycopg driver: pip install 'clerk-sync[postgres]'"
            ) from None
    else:
        raise StoreError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        )
    db = Database(engine=engine, url=url)
    if migrate:
        try:
            migrate_schema(db)
        except OperationalError as exc:
            raise StoreError(f"cannot open the database {db.safe_url}: {exc.orig}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate the database {db.safe_url}: {exc}") from None
    return db


def _v1_create_all(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


def _v2_daemon_state(conn: Connection) -> None:
    from clerk_sync.store.ops import migrate_daemon_state  # ops imports this module

    migrate_daemon_state(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_create_all, _v2_daemon_state]
"""Step N brings the schema from version N to N+1. Append only; never edit a released step."""


def schema_version(conn: Connection) -> int:
    """The applied migration count (0 for an empty database)."""
    # Ask first instead of catching the error: on PostgreSQL a failed SELECT aborts the transaction.
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(text("SELECT version FROM schema_version WHERE id = 1")).first()
    return int(row[0]) if row else 0


def migrate_schema(db: Database) -> int:
    """Apply pending migrations, each in its own transaction; return the resulting version."""
    target = len(MIGRATIONS)
    with db.engine.connect() as probe:
        if probe.dialect.name == "sqlite":
            pass
        current = schema_version(probe)
        probe.rollback()
    if current > target:
        raise StoreError(
            f"the database schema is version {current}, newer than this clerk-sync knows ({target}): upgrade clerk-sync"
        )
    while current < target:
        with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                # Replicas starting together: one migrates, the others wait for it.
                conn.execute(text("SELECT pg_advisory_xact_lock(7134512)"))
            current = schema_version(conn)
            if current >= target:
                break
            MIGRATIONS[current](conn)
            current += 1
            if current == 1:
                conn.execute(text("INSERT INTO schema_version (id, version) VALUES (1, 1)"))
            else:
                conn.execute(text("UPDATE schema_version SET version = :v WHERE id = 1"), {"v": current})
    return current
