"""Benchmark: the sync engine against the simulator over loopback; prints one JSON document.

    python -m benchmarks.sync                    # 100,000 users, 2,000 orgs (~5,000 memberships)
    python -m benchmarks.sync --users 1000000    # the memory target at a million users

Figures (issue 4, "Performance targets"), the rate limit lifted:

- ``bare_walk_s``: fetch + parse of every users page (cursor walk, 500 per page), nothing stored;
  the faster of two runs (before the passes and after them);
- ``baseline_s`` / ``baseline_ratio``: the first full users pass (mirror built, no events), and
  its time over the bare walk (target <= 3);
- ``resync_s`` / ``resync_ratio``: a full users pass after 1% of users were updated, 0.1% deleted
  and 0.1% created through the simulator's control API (target <= 2), with ``resync_events``
  by type, which must equal the changes exactly (``resync_events_exact``);
- ``idle_poll_requests``: an incremental users pass of the unchanged tenant, right after the
  baseline (target <= 5);
- ``peak_rss_mb``: the largest VmHWM of the sync processes (each phase runs in its own child
  process; target 300 MB, 400 MB at a million users);
- organizations and memberships full passes, for scale.

The simulator runs in its own process; each phase runs in a fresh child (``--phase``), so a
phase's peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import control_url, enroll_state, peak_rss_mb, start_simulator, timed_passes

KEY = "sk_live_bench"
TENANT = "bench"
BIG_LIMIT = 10_000_000


def _settings(state: Path, api_url: str) -> Any:
    import dataclasses

    from clerk_sync.config import ClerkSettings, RateSettings, Settings, VaultSettings

    base = Settings(state_dir=state)
    return base.replace(
        clerk=dataclasses.replace(ClerkSettings(), api_url=api_url),
        vault=VaultSettings(master_key_file=state / "master.key"),
        rate=RateSettings(share=1.0, limit_per_10s=BIG_LIMIT),
        database=dataclasses.replace(base.database, url=f"sqlite:///{state / 'clerk-sync.db'}"),
    )


# --- child phases -----------------------------------------------------------------------------


async def _bare_walk(api_url: str) -> dict[str, Any]:
    from clerk_sync.clerk.budget import InstanceBudget
    from clerk_sync.clerk.client import ClerkClient, ClientOptions
    from clerk_sync.clerk.walk import walk
    from clerk_sync.resources import USERS
    from clerk_sync.vault import SecretKey

    started = time.perf_counter()
    users = pages = 0
    budget = InstanceBudget(BIG_LIMIT, 1.0)
    async with ClerkClient(SecretKey(KEY), api_url, budget, ClientOptions()) as client:
        async for page in walk(client, USERS, 500):
            pages += 1
            users += len(page.items)
    return {"seconds": round(time.perf_counter() - started, 3), "pages": pages, "users": users}


async def _passes(state: Path, api_url: str, resources: list[str], mode: str) -> dict[str, Any]:
    from clerk_sync.store.db import open_database

    settings = _settings(state, api_url)
    db = open_database(settings.database_url)
    try:
        return await timed_passes(settings, db, TENANT, resources, mode)
    finally:
        db.dispose()


def _child(args: argparse.Namespace) -> None:
    from clerk_sync.logs import setup_logging

    setup_logging("json", "warning")
    if args.phase == "walk":
        doc = asyncio.run(_bare_walk(args.api_url))
    else:
        doc = asyncio.run(_passes(Path(args.state), args.api_url, args.resources.split(","), args.phase))
    doc["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(doc))


# --- parent -----------------------------------------------------------------------------------


def _run_child(*argv: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.sync", *argv], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark phase {argv} failed:\n{out.stderr}")
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def _change(api_url: str, users: int) -> dict[str, int]:
    """1% updated, 0.1% deleted, 0.1% created, through the control API."""
    base = f"{control_url(api_url)}/instances/{KEY}"
    with httpx.Client(timeout=120) as http:
        ids: list[str] = http.get(f"{base}/user_ids").raise_for_status().json()
        if isinstance(ids, dict):
            ids = ids.get("user_ids") or ids.get("ids") or ids.get("data") or []
        n_upd, n_del, n_new = users // 100, users // 1000, users // 1000
        step = len(ids) // (n_upd + n_del)
        picks = ids[::step][: n_upd + n_del]
        for uid in picks[:n_upd]:
            http.patch(f"{base}/users/{uid}", json={"first_name": "Changed"}).raise_for_status()
        for uid in picks[n_upd:]:
            http.delete(f"{base}/users/{uid}").raise_for_status()
        for i in range(n_new):
            http.post(f"{base}/users", json={"first_name": f"New{i}"}).raise_for_status()
    return {"user.updated": n_upd, "user.deleted": n_del, "user.created": n_new}


def _events_by_type(state: Path, after_seq: int) -> tuple[dict[str, int], int]:
    import sqlite3

    conn = sqlite3.connect(state / "clerk-sync.db")
    rows = conn.execute("SELECT type, sequence FROM outbox WHERE sequence > ?", (after_seq,)).fetchall()
    conn.close()
    counts = Counter(t for t, _ in rows)
    return dict(counts), max([s for _, s in rows] or [after_seq])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=None, help="default: users / 50")
    parser.add_argument("--phase", choices=("walk", "full", "incremental"), help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--resources", default="users", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _child(args)
        return
    orgs = args.orgs if args.orgs is not None else max(1, args.users // 50)
    with (
        tempfile.TemporaryDirectory(prefix="clerk-sync-bench-") as tmp,
        start_simulator(users=args.users, orgs=orgs, limit_per_10s=BIG_LIMIT) as api_url,
    ):
        state = Path(tmp) / "state"
        enroll_state(_settings(state, api_url), TENANT, KEY, api_url)
        common = ["--api-url", api_url, "--state", str(state)]
        walk = _run_child("--phase", "walk", *common)
        baseline = _run_child(
            "--phase", "full", "--resources", "users,organizations,organization_memberships", *common
        )
        idle = _run_child("--phase", "incremental", "--resources", "users", *common)
        _, seq = _events_by_type(state, 0)
        expected = _change(api_url, args.users)
        resync = _run_child("--phase", "full", "--resources", "users", *common)
        events, seq = _events_by_type(state, seq)
        walk_again = _run_child("--phase", "walk", *common)
        # Conservative: the faster of two bare walks (before and after), so load on the machine
        # during one of them cannot flatter the ratios.
        walk_s = min(walk["seconds"], walk_again["seconds"])
        doc = {
            "users": args.users,
            "organizations": orgs,
            "memberships": baseline["organization_memberships"]["objects"],
            "bare_walk_s": walk_s,
            "bare_walk_runs_s": [walk["seconds"], walk_again["seconds"]],
            "bare_walk_pages": walk["pages"],
            "baseline_s": baseline["users"]["seconds"],
            "baseline_ratio": round(baseline["users"]["seconds"] / walk_s, 2),
            "baseline_events": baseline["users"]["events"],
            "organizations_pass_s": baseline["organizations"]["seconds"],
            "memberships_pass_s": baseline["organization_memberships"]["seconds"],
            "resync_s": resync["users"]["seconds"],
            "resync_ratio": round(resync["users"]["seconds"] / walk_s, 2),
            "resync_requests": resync["users"]["requests"],
            "resync_events": events,
            "resync_expected": expected,
            "resync_events_exact": events == expected,
            "idle_poll_requests": idle["users"]["requests"],
            "idle_poll_mode": idle["users"]["mode"],
            "idle_poll_s": idle["users"]["seconds"],
            "peak_rss_mb": max(
                walk["peak_rss_mb"], baseline["peak_rss_mb"], resync["peak_rss_mb"], idle["peak_rss_mb"]
            ),
            "peak_rss_mb_by_phase": {
                "bare_walk": walk["peak_rss_mb"],
                "baseline": baseline["peak_rss_mb"],
                "resync": resync["peak_rss_mb"],
                "idle_poll": idle["peak_rss_mb"],
            },
            "statuses": sorted(
                {p["status"] for ph in (baseline, resync, idle) for p in ph.values() if isinstance(p, dict)}
            ),
        }
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
