"""Benchmark: what a sessions poll costs in requests; prints one JSON document.

    python -m benchmarks.sessions                  # 100,000 users, 1% active since the last poll
    python -m benchmarks.sessions --users 10000

Phases, against the simulator in its own process with the rate limit lifted:

1. **baseline**: a full users pass, then sessions passes until every user who ever signed in has
   been listed once (the one-off cost: one request per such user);
2. **active poll**: 1% of the users sign in (simulator control API), then a users incremental
   pass and a sessions pass with the default settings (``sessions.max_requests_per_pass`` 1000).
   Target: about 1,000 ``/sessions`` requests plus the users' incremental requests, not one per
   user; exactly one ``session.created`` per sign-in (a sign-in the cap leaves over is taken by
   the next pass, ``carry_over_poll``);
3. **idle poll**: nobody active: the users incremental pass and the sessions pass's sign-in
   discovery only, no ``/sessions`` request.

Requests are counted by the simulator (``requests_by_path``), so they include retries.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    control_url,
    enroll_state,
    peak_rss_mb,
    sim_stats,
    start_simulator,
    timed_passes,
)

KEY = "sk_live_bench"
TENANT = "bench"
BIG_LIMIT = 10_000_000
HTTP_CONNECTIONS = 16


def _settings(state: Path, api_url: str, **sessions: Any) -> Any:
    from clerk_sync.config import (
        ClerkSettings,
        HttpSettings,
        RateSettings,
        SessionSettings,
        Settings,
        VaultSettings,
    )

    base = Settings(state_dir=state)
    return base.replace(
        clerk=dataclasses.replace(ClerkSettings(), api_url=api_url),
        vault=VaultSettings(master_key_file=state / "master.key"),
        rate=RateSettings(share=1.0, limit_per_10s=BIG_LIMIT),
        # Concurrent listings: the one-off baseline lists every user once.
        http=dataclasses.replace(HttpSettings(), max_connections=HTTP_CONNECTIONS),
        database=dataclasses.replace(base.database, url=f"sqlite:///{state / 'clerk-sync.db'}"),
        sessions=dataclasses.replace(SessionSettings(), **sessions),
    )


def _by_path(api_url: str) -> Counter[str]:
    stats = sim_stats(api_url, KEY)
    return Counter({k: int(v) for k, v in stats.get("requests_by_path", {}).items()})


def _sessions_requests(delta: Counter[str]) -> int:
    return sum(v for k, v in delta.items() if k.rstrip("/").endswith("/sessions"))


async def _phase(
    state: Path, api_url: str, resources: list[str], mode: str, **sessions: Any
) -> dict[str, Any]:
    """Run passes; return per-resource figures and the simulator's request counts by path."""
    from clerk_sync.store import session_checks
    from clerk_sync.store.db import open_database
    from clerk_sync.store.tenants import TenantStore

    settings = _settings(state, api_url, **sessions)
    db = open_database(settings.database_url)
    tenant = TenantStore(db).get(TENANT)
    before = _by_path(api_url)
    out = await timed_passes(settings, db, TENANT, resources, mode)
    delta = _by_path(api_url) - before
    assert tenant.id is not None
    pending, stalest = session_checks.sessions_backlog(db, tenant.id, settings=settings.sessions)
    out["requests_by_path"] = dict(delta)
    out["session_requests"] = _sessions_requests(delta)
    out["backlog_after"] = {"pending_users": pending, "stalest_check_age_s": stalest}
    db.dispose()
    return out


def _events_by_type(state: Path, after_seq: int) -> tuple[dict[str, int], int]:
    conn = sqlite3.connect(state / "clerk-sync.db")
    rows = conn.execute("SELECT type, sequence FROM outbox WHERE sequence > ?", (after_seq,)).fetchall()
    conn.close()
    return dict(Counter(t for t, _ in rows)), max([s for _, s in rows] or [after_seq])


def _sign_in(api_url: str, share: float) -> int:
    """Sign in every ``1/share``-th user through the simulator's control API; return how many."""
    base = f"{control_url(api_url)}/instances/{KEY}"
    with httpx.Client(timeout=120) as http:
        ids: list[str] = http.get(f"{base}/user_ids").raise_for_status().json()
        picks = ids[:: max(1, round(1 / share))]
        for uid in picks:
            http.post(f"{base}/users/{uid}/sign_in", json={}).raise_for_status()
    return len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--active", type=float, default=0.01, help="share of users who sign in")
    args = parser.parse_args()
    from clerk_sync.logs import setup_logging

    setup_logging("json", "warning")
    with (
        tempfile.TemporaryDirectory(prefix="clerk-sync-bench-") as tmp,
        start_simulator(users=args.users, orgs=0, limit_per_10s=BIG_LIMIT) as api_url,
    ):
        state = Path(tmp) / "state"
        enroll_state(_settings(state, api_url), TENANT, KEY, api_url)
        started = time.perf_counter()
        base_users = asyncio.run(_phase(state, api_url, ["users"], "full"))
        base_sessions = asyncio.run(
            _phase(state, api_url, ["sessions"], "incremental", max_requests_per_pass=10 * args.users)
        )
        baseline_s = round(time.perf_counter() - started, 3)
        _, seq = _events_by_type(state, 0)

        signed_in = _sign_in(api_url, args.active)
        active = asyncio.run(_phase(state, api_url, ["users", "sessions"], "incremental"))
        active_events, seq = _events_by_type(state, seq)
        carry = asyncio.run(_phase(state, api_url, ["users", "sessions"], "incremental"))
        carry_events, seq = _events_by_type(state, seq)
        idle = asyncio.run(_phase(state, api_url, ["users", "sessions"], "incremental"))
        idle_events, seq = _events_by_type(state, seq)

        def poll(p: dict[str, Any], events: dict[str, int]) -> dict[str, Any]:
            return {
                "users_pass_requests": p["users"]["requests"],
                "users_pass_mode": p["users"]["mode"],
                "sessions_pass_requests": p["sessions"]["requests"],
                "session_requests": p["session_requests"],
                "total_requests": sum(p["requests_by_path"].values()),
                "requests_by_path": p["requests_by_path"],
                "events": events,
                "seconds": round(p["users"]["seconds"] + p["sessions"]["seconds"], 3),
                "sessions_pass_s": p["sessions"]["seconds"],
                "backlog_after": p["backlog_after"],
                "statuses": sorted({p[r]["status"] for r in ("users", "sessions")}),
            }

        created = active_events.get("session.created", 0) + carry_events.get("session.created", 0)
        doc = {
            "users": args.users,
            "signed_in_since_last_poll": signed_in,
            "baseline": {
                "users_pass_requests": base_users["users"]["requests"],
                "session_requests": base_sessions["session_requests"],
                "sessions_pass_requests": base_sessions["sessions"]["requests"],
                "sessions_pass_s": base_sessions["sessions"]["seconds"],
                "events": base_sessions["sessions"]["events"],
                "seconds": baseline_s,
                "backlog_after": base_sessions["backlog_after"],
            },
            "active_poll": poll(active, active_events),
            "carry_over_poll": poll(carry, carry_events),
            "idle_poll": poll(idle, idle_events),
            "session_created_events": created,
            "session_created_exact": created == signed_in
            and set(active_events) | set(carry_events) <= {"session.created"},
            "peak_rss_mb": peak_rss_mb(),
        }
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
