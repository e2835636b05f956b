"""SQL for operations: the daemon's state rows and the aggregates ``clerk-sync status`` shows.

``daemon_state`` has one row per running daemon replica, rewritten every few seconds with a JSON
snapshot (next run per job, passes running, budget counters). It lives in its own ``MetaData`` and
is created by its own migration step, so the other tables' step stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)

from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import MirrorObject, OutboxEvent, SinkCursor, SyncRun, Tenant

_ops_metadata = MetaData()

DAEMON_STATE = Table(
    "daemon_state",
    _ops_metadata,
    Column("replica", String(255), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("heartbeat_ms", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
)

STATE_KEEP_MS = 7 * 86_400_000
"""Rows of replicas silent for this long are deleted (hosts renamed, pids of past runs)."""

_RUNS = SyncRun.__table__  # type: ignore[attr-defined]
_MIRROR = MirrorObject.__table__  # type: ignore[attr-defined]
_OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]
_CURSOR = SinkCursor.__table__  # type: ignore[attr-defined]
_TENANT = Tenant.__table__  # type: ignore[attr-defined]


def migrate_daemon_state(conn: Connection) -> None:
    """Migration step: create ``daemon_state`` (idempotent)."""
    DAEMON_STATE.create(conn, checkfirst=True)


def write_daemon_state(db: Database, replica: str, state: dict[str, Any]) -> None:
    """Upsert this replica's snapshot and forget replicas silent for a week."""
    now = now_ms()
    values = {
        "pid": int(state.get("pid", 0)),
        "started_ms": int(state.get("started_ms", now)),
        "heartbeat_ms": now,
        "state": orjson.dumps(state).decode(),
    }
    with db.transaction() as conn:
        res = conn.execute(update(DAEMON_STATE).where(DAEMON_STATE.c.replica == replica).values(**values))
        if res.rowcount == 0:
            conn.execute(insert(DAEMON_STATE).values(replica=replica, **values))
        conn.execute(delete(DAEMON_STATE).where(DAEMON_STATE.c.heartbeat_ms < now - STATE_KEEP_MS))


def read_daemon_states(conn: Connection) -> list[dict[str, Any]]:
    """Every replica's last snapshot, with ``heartbeat_ms`` added."""
    out = []
    for row in conn.execute(select(DAEMON_STATE).order_by(DAEMON_STATE.c.replica)):
        state = orjson.loads(row.state)
        state["replica"] = row.replica
        state["heartbeat_ms"] = int(row.heartbeat_ms)
        out.append(state)
    return out


@dataclass(frozen=True)
class TenantRow:
    """The tenant columns status shows."""

    id: int
    name: str
    enabled: bool
    key_status: str
    instance_id: str | None
    environment: str | None


def tenants(conn: Connection) -> list[TenantRow]:
    """Every tenant not removed, by name."""
    t = _TENANT.c
    rows = conn.execute(
        select(t.id, t.name, t.enabled, t.key_status, t.instance_id, t.environment)
        .where(t.key_status != "removed")
        .order_by(t.name)
    )
    return [
        TenantRow(int(r.id), r.name, bool(r.enabled), r.key_status, r.instance_id, r.environment)
        for r in rows
    ]


@dataclass
class RunFacts:
    """What the sync_run table says about one (tenant, resource)."""

    last_success_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    running: int = 0


def run_facts(conn: Connection) -> dict[tuple[int, str], RunFacts]:
    """Last success, last failure and passes running, per (tenant id, resource)."""
    r = _RUNS.c
    facts: dict[tuple[int, str], RunFacts] = {}

    def get(tid: int, res: str) -> RunFacts:
        return facts.setdefault((int(tid), res), RunFacts())

    for row in conn.execute(
        select(r.tenant_id, r.resource, func.max(r.finished_ms))
        .where(r.status == "ok")
        .group_by(r.tenant_id, r.resource)
    ):
        get(row[0], row[1]).last_success_ms = int(row[2]) if row[2] is not None else None
    latest_failure = (
        select(func.max(r.id)).where(r.status == "failed").group_by(r.tenant_id, r.resource).scalar_subquery()
    )
    for row in conn.execute(
        select(r.tenant_id, r.resource, r.error, r.finished_ms).where(r.id.in_(latest_failure))
    ):
        f = get(row[0], row[1])
        f.last_error, f.last_error_ms = row[2], int(row[3]) if row[3] is not None else None
    for row in conn.execute(
        select(r.tenant_id, r.resource, func.count())
        .where(r.status == "running")
        .group_by(r.tenant_id, r.resource)
    ):
        get(row[0], row[1]).running = int(row[2])
    return facts


def requests_since(conn: Connection, since_ms: int) -> dict[int, int]:
    """Requests of passes that finished (or, still running, started) since ``since_ms``, per tenant.

    An approximation of budget use for when no daemon reports its live counters: a long pass's
    requests are counted when it saves its counters, not as they are sent.
    """
    r = _RUNS.c
    rows = conn.execute(
        select(r.tenant_id, func.sum(r.requests))
        .where(func.coalesce(r.finished_ms, r.started_ms) >= since_ms)
        .group_by(r.tenant_id)
    )
    return {int(tid): int(n or 0) for tid, n in rows}


def mirrored_counts(conn: Connection) -> dict[tuple[int, str], int]:
    """Live (not tombstoned) mirror rows per (tenant id, resource)."""
    m = _MIRROR.c
    rows = conn.execute(
        select(m.tenant_id, m.resource, func.count())
        .where(m.deleted_ms.is_(None))
        .group_by(m.tenant_id, m.resource)
    )
    return {(int(tid), res): int(n) for tid, res, n in rows}


def pending_counts(conn: Connection, tenant_ids: list[int], sinks: list[str]) -> dict[tuple[int, str], int]:
    """Outbox rows some configured sink has not delivered, per (tenant id, resource).

    A tenant's floor is the lowest cursor among the configured sinks (a sink that never delivered
    counts as 0). With no sinks configured nothing delivers, so every event counts as pending.
    """
    c = _CURSOR.c
    o = _OUTBOX.c
    floors: dict[int, int] = dict.fromkeys(tenant_ids, 0)
    if sinks:
        seen: dict[int, dict[str, int]] = {}
        for sink, tid, seq in conn.execute(select(c.sink, c.tenant_id, c.sequence).where(c.sink.in_(sinks))):
            seen.setdefault(int(tid), {})[sink] = int(seq)
        floors = {tid: min(seen.get(tid, {}).get(s, 0) for s in sinks) for tid in tenant_ids}
    out: dict[tuple[int, str], int] = {}
    for tid, floor in floors.items():
        rows = conn.execute(
            select(o.resource, func.count())
            .where(o.tenant_id == tid, o.sequence > floor)
            .group_by(o.resource)
        )
        for res, n in rows:
            out[(tid, res)] = int(n)
    return out
