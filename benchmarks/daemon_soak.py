"""Benchmark: the daemon serving many tenants for a while; prints one JSON document.

    python -m benchmarks.daemon_soak                       # 50 tenants (35 production, 15 development), 120 s
    python -m benchmarks.daemon_soak --tenants 100 --seconds 300

The simulator runs in its own process with Clerk's real limits (1000 / 100 requests per 10 s); the
daemon is ``clerk-sync run`` in another, with a compressed schedule (incremental every 30-60 s, a
full pass every 120 s) so that every job of every tenant runs within the window. Reported: 429s
seen by the simulator (target 0), tenants with every resource synced (target all), the busiest
10 s window per instance against its limit, and the daemon process's CPU seconds and peak RSS
(read from ``/proc``), plus its exit code after SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.common import sim_stats, start_simulator
from clerk_sync.resources import ALL
from clerk_sync.store.db import open_database
from clerk_sync.store.models import MirrorObject, OutboxEvent, SyncRun
from clerk_sync.store.tenants import InstanceInfo, TenantStore
from clerk_sync.vault import Keyring, MasterKey, SecretKey, write_master_key_file

CONFIG = """
state_dir = "{tmp}"
[database]
url = "sqlite:///{tmp}/clerk-sync.db"
[clerk]
api_url = "{api_url}"
[vault]
master_key_file = "{tmp}/master.key"
[schedule]
users_incremental_s = 30
sessions_s = 30
organizations_s = 60
organization_memberships_s = 60
invitations_s = 60
full_pass_s = 120
jitter_s = 5
tenant_refresh_s = 30
[daemon]
shutdown_timeout_s = 10
"""


def proc_figures(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, current RSS MB, peak RSS MB) of a live process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return cpu_s, kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument(
        "--development", type=int, default=None, help="How many are development (default 30%%)."
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=20)
    args = parser.parse_args()
    n_dev = args.development if args.development is not None else int(args.tenants * 0.3)
    keys = [f"sk_test_dev{i}" if i < n_dev else f"sk_live_prod{i}" for i in range(args.tenants)]

    with (
        tempfile.TemporaryDirectory() as tmp_dir,
        start_simulator(users=args.users, orgs=args.orgs) as api_url,
    ):
        tmp = Path(tmp_dir)
        master = MasterKey.generate()
        write_master_key_file(tmp / "master.key", master)
        cfg = tmp / "clerk-sync.toml"
        cfg.write_text(CONFIG.format(tmp=tmp, api_url=api_url))
        db = open_database(f"sqlite:///{tmp}/clerk-sync.db")
        store = TenantStore(db)
        with httpx.Client(base_url=api_url, timeout=30) as http:
            for i, key in enumerate(keys):
                inst = http.get("/instance", headers={"Authorization": f"Bearer {key}"}).json()
                store.create(
                    f"tenant{i}",
                    SecretKey(key),
                    Keyring(master),
                    InstanceInfo(inst["id"], inst["environment_type"]),
                )

        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        log = tmp / "daemon.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clerk_sync", "--config", str(cfg), "--log-format", "json", "run"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        started = time.monotonic()
        peak_rss = 0.0
        rss_samples: list[float] = []
        while time.monotonic() - started < args.seconds and proc.poll() is None:
            time.sleep(1)
            _, rss, peak_rss = proc_figures(proc.pid)
            rss_samples.append(rss)
        cpu_s, rss_end, peak_rss = proc_figures(proc.pid)
        wall_s = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - t0

        stats = sim_stats(api_url)
        runs = SyncRun.__table__  # type: ignore[attr-defined]
        with db.read() as conn:
            ok_pairs = {
                (tid, res)
                for tid, res in conn.execute(
                    select(runs.c.tenant_id, runs.c.resource).where(runs.c.status == "ok").distinct()
                )
            }
            by_status = dict(conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all())
            by_mode = dict(
                conn.execute(
                    select(runs.c.mode, func.count()).where(runs.c.status == "ok").group_by(runs.c.mode)
                ).all()
            )
            mirrored = conn.execute(select(func.count()).select_from(MirrorObject.__table__)).scalar_one()  # type: ignore[attr-defined]
            events = conn.execute(select(func.count()).select_from(OutboxEvent.__table__)).scalar_one()  # type: ignore[attr-defined]
        tenant_ids = [t.id for t in store.list()]
        fully_synced = sum(1 for tid in tenant_ids if all((tid, r.name) in ok_pairs for r in ALL))
        db.dispose()

        per_env: dict[str, dict[str, Any]] = {}
        for inst in stats.get("by_instance", {}).values():
            e = per_env.setdefault(inst["environment"], {"instances": 0, "busiest_10s": 0, "requests": 0})
            e["instances"] += 1
            e["busiest_10s"] = max(e["busiest_10s"], inst["max_requests_in_any_10s"])
            e["requests"] += inst["admitted"]
        errors = [ln for ln in log.read_text().splitlines() if '"level":"error"' in ln]
        print(
            json.dumps(
                {
                    "tenants": args.tenants,
                    "development_tenants": n_dev,
                    "users_per_tenant": args.users,
                    "seconds": round(wall_s, 1),
                    "tenants_fully_synced": fully_synced,
                    "runs_by_status": by_status,
                    "ok_runs_by_mode": by_mode,
                    "mirrored_rows": mirrored,
                    "events": events,
                    "sim_refused_429": stats.get("refused_429", 0),
                    "sim_non_get": stats.get("non_get", 0),
                    "per_environment": per_env,
                    "limits_per_10s": {"production": 1000, "development": 100, "share": 0.5},
                    "daemon_cpu_s": round(cpu_s, 2),
                    "daemon_cpu_pct_of_one_core": round(100 * cpu_s / wall_s, 1),
                    "daemon_rss_mb_end": round(rss_end, 1),
                    "daemon_rss_mb_peak": round(peak_rss, 1),
                    "daemon_exit_code": code,
                    "daemon_stop_s": round(stop_s, 2),
                    "error_log_lines": len(errors),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
