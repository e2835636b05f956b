"""``clerk-sync status``: what every tenant and resource looks like, read from the database alone.

Works while the daemon runs (SQLite WAL and PostgreSQL let it read beside the writer) and while it
does not: the daemon only adds its live view (next run per job, budget counters) through its
``daemon_state`` row, which is ignored once its heartbeat is older than ``DAEMON_ALIVE_MS``.

Events pending delivery are the outbox rows beyond the lowest cursor among the configured sinks
(a sink that never delivered counts from 0); with no sinks configured, every event is pending.
Budget used in the last minute comes from the daemon's live counters when a daemon is up, else it
is approximated by the requests of passes that finished in the last minute.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from clerk_sync.config import Settings
from clerk_sync.resources import ALL
from clerk_sync.store import ops
from clerk_sync.store.db import Database
from clerk_sync.store.session_checks import sessions_backlog

DAEMON_ALIVE_MS = 60_000
"""A daemon whose state row is older than this is shown as not running."""


@dataclass
class ResourceStatus:
    """One (tenant, resource)."""

    resource: str
    last_success_ms: int | None = None
    last_error: str | None = None
    """The latest failure, when it is more recent than the latest success."""
    last_error_ms: int | None = None
    objects_mirrored: int = 0
    events_pending: int = 0
    running: bool = False
    next_run_ms: int | None = None
    """Next incremental pass scheduled by a live daemon."""
    next_full_ms: int | None = None


@dataclass
class TenantStatus:
    """One tenant and its resources."""

    name: str
    id: int
    enabled: bool
    key_status: str
    instance_id: str | None
    environment: str | None
    budget_used_last_minute: int = 0
    budget_capacity_per_10s: int | None = None
    budget_source: str = "runs"
    """``daemon`` (live counters) or ``runs`` (sum of finished passes' requests)."""
    sessions_backlog: int = 0
    """Users due for a session check (signed in since, or open sessions past their freshness target)."""
    stalest_session_check_s: float | None = None
    """Age of the oldest check among users holding open sessions."""
    resources: list[ResourceStatus] = field(default_factory=list)


@dataclass
class DaemonStatus:
    """One daemon replica as its state row last described it."""

    replica: str
    pid: int
    alive: bool
    heartbeat_ms: int
    tenants: int
    running: list[str]
    last_error: str | None


@dataclass
class StatusReport:
    """Everything ``clerk-sync status`` prints."""

    generated_ms: int
    daemons: list[DaemonStatus]
    tenants: list[TenantStatus]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return dataclasses.asdict(self)


def sink_names(settings: Settings) -> list[str]:
    """Configured sink names, defaulted the way delivery names them."""
    return [s.name or f"{s.kind}-{i}" for i, s in enumerate(settings.sinks)]


def build_status(db: Database, settings: Settings, now_ms: int | None = None) -> StatusReport:
    """Read the report in one read transaction."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    with db.read() as conn:
        tenant_rows = ops.tenants(conn)
        facts = ops.run_facts(conn)
        mirrored = ops.mirrored_counts(conn)
        pending = ops.pending_counts(conn, [t.id for t in tenant_rows], sink_names(settings))
        recent_requests = ops.requests_since(conn, now - 60_000)
        states = ops.read_daemon_states(conn)

    daemons = [
        DaemonStatus(
            replica=s["replica"],
            pid=int(s.get("pid", 0)),
            alive=not s.get("stopped") and now - s["heartbeat_ms"] <= DAEMON_ALIVE_MS,
            heartbeat_ms=s["heartbeat_ms"],
            tenants=int(s.get("tenants", 0)),
            running=list(s.get("running", [])),
            last_error=s.get("last_error"),
        )
        for s in states
    ]
    live = [s for s, d in zip(states, daemons, strict=True) if d.alive]
    next_runs: dict[str, int] = {}
    budgets: dict[str, dict[str, int]] = {}
    for s in live:
        for job, when in s.get("next_runs", {}).items():
            next_runs[job] = min(when, next_runs.get(job, when))
        for iid, b in s.get("budgets", {}).items():
            agg = budgets.setdefault(iid, {"used_60s": 0, "capacity_10s": 0})
            agg["used_60s"] += int(b.get("used_60s", 0))
            agg["capacity_10s"] = max(agg["capacity_10s"], int(b.get("capacity_10s", 0)))

    out = []
    for t in tenant_rows:
        ts = TenantStatus(t.name, t.id, t.enabled, t.key_status, t.instance_id, t.environment)
        if t.instance_id and t.instance_id in budgets:
            ts.budget_used_last_minute = budgets[t.instance_id]["used_60s"]
            ts.budget_capacity_per_10s = budgets[t.instance_id]["capacity_10s"]
            ts.budget_source = "daemon"
        else:
            ts.budget_used_last_minute = recent_requests.get(t.id, 0)
        ts.sessions_backlog, ts.stalest_session_check_s = sessions_backlog(
            db, t.id, settings=settings.sessions, now=now
        )
        for resource in ALL:
            f = facts.get((t.id, resource.name), ops.RunFacts())
            rs = ResourceStatus(
                resource=resource.name,
                last_success_ms=f.last_success_ms,
                objects_mirrored=mirrored.get((t.id, resource.name), 0),
                events_pending=pending.get((t.id, resource.name), 0),
                running=f.running > 0,
                next_run_ms=next_runs.get(f"incremental:{t.id}:{resource.name}"),
                next_full_ms=next_runs.get(f"full:{t.id}:{resource.name}"),
            )
            if f.last_error_ms is not None and (
                f.last_success_ms is None or f.last_error_ms > f.last_success_ms
            ):
                rs.last_error, rs.last_error_ms = f.last_error, f.last_error_ms
            ts.resources.append(rs)
        out.append(ts)
    return StatusReport(generated_ms=now, daemons=daemons, tenants=out)


def _ago(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "never"
    return _span((now_ms - ms) / 1000) + " ago"


def _in(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    delta = (ms - now_ms) / 1000
    return "due" if delta <= 0 else "in " + _span(delta)


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    if s < 172_800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def render_text(report: StatusReport) -> str:
    """A compact, plain-text table (no colour, so it pastes into tickets)."""
    now = report.generated_ms
    lines: list[str] = []
    if not report.daemons:
        lines.append("daemon: none has run against this database")
    for d in report.daemons:
        state = "running" if d.alive else "not running"
        lines.append(
            f"daemon {d.replica}: {state}, heartbeat {_ago(d.heartbeat_ms, now)}, {d.tenants} tenants, "
            f"{len(d.running)} passes running, last error: {d.last_error or 'none'}"
        )
    if not report.tenants:
        lines.append("no tenants enrolled")
    header = ("resource", "last success", "objects", "pending", "next run", "last error")
    for t in report.tenants:
        flags = [t.environment or "unknown env", "enabled" if t.enabled else "disabled"]
        if t.key_status != "ok":
            flags.append(f"key {t.key_status}")
        cap = f"/{t.budget_capacity_per_10s * 6}" if t.budget_capacity_per_10s else ""
        lines.append("")
        lines.append(
            f"{t.name} ({', '.join(flags)}) budget last minute: {t.budget_used_last_minute}{cap} requests"
            + (" (from finished passes)" if t.budget_source == "runs" else "")
        )
        stalest = "-" if t.stalest_session_check_s is None else _span(t.stalest_session_check_s)
        lines.append(f"  sessions backlog: {t.sessions_backlog} users, stalest check {stalest}")
        rows = [header]
        for r in t.resources:
            last = _ago(r.last_success_ms, now) + (" (running)" if r.running else "")
            error = (r.last_error or "")[:80]
            rows.append(
                (
                    r.resource,
                    last,
                    str(r.objects_mirrored),
                    str(r.events_pending),
                    _in(r.next_run_ms, now),
                    error,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
            lines.append(("  " + "  ".join(cells) + "  " + row[-1]).rstrip())
    return "\n".join(lines)
