"""Shared benchmark helpers: run the simulator in its own process, read its stats, measure our RSS.

The simulator runs in a subprocess (``python -m clerk_sync simulate …``) so that the memory a
benchmark reports is the client's alone::

    from benchmarks.common import peak_rss_mb, sim_stats, start_simulator

    with start_simulator(users=50_000, limit_per_10s=100) as api_url:   # "http://127.0.0.1:PORT/v1"
        ...                                                              # point clerk-sync at api_url
        stats = sim_stats(api_url)                                       # GET /_sim/stats
    print(json.dumps({"client_peak_rss_mb": peak_rss_mb(), **stats}))
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

_URL_RE = re.compile(r"https?://[^\s\"']+")


_SERVE = (
    "import json, sys\n"
    "from clerk_sync.simulator import SimulatedClerk, serve\n"
    "serve(SimulatedClerk(**json.loads(sys.argv[1])), host='127.0.0.1', port=0,\n"
    "      on_ready=lambda url: print(url, flush=True))\n"
)


@contextlib.contextmanager
def start_simulator(
    *,
    users: int = 1000,
    orgs: int = 0,
    seed: int = 1,
    limit_per_10s: int | None = None,
    instances: list[str] | None = None,
    startup_timeout_s: float = 600.0,
) -> Iterator[str]:
    """Serve a ``SimulatedClerk`` from a subprocess on a free loopback port; yield its API URL (``…/v1``).

    Uses the simulator's own ``serve()`` (what ``clerk-sync simulate`` runs) so a benchmark does not
    depend on CLI flags. The subprocess is terminated on exit; its stderr is passed through.
    """
    sim_kwargs = {
        "users": users,
        "orgs": orgs,
        "seed": seed,
        "limit_per_10s": limit_per_10s,
        "instances": instances,
    }
    cmd = [sys.executable, "-c", _SERVE, json.dumps(sim_kwargs)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        api_url = _read_url(proc, startup_timeout_s).rstrip("/")
        if not api_url.endswith("/v1"):
            api_url += "/v1"
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The first URL the simulator prints on stdout (then keep draining stdout in the background)."""
    assert proc.stdout is not None
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _URL_RE.search(line)
            if match and not found:
                found.append(match.group(0))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.2):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulator printed no URL within {timeout_s:g} s")
    if not found:
        raise RuntimeError(f"the simulator exited (code {proc.wait()}) without printing its URL")
    return found[0]


def control_url(api_url: str) -> str:
    """The simulator's control root (``/_sim``) for its API URL."""
    return api_url.rstrip("/").removesuffix("/v1") + "/_sim"


def sim_stats(api_url: str, instance_key: str | None = None) -> dict[str, Any]:
    """``GET /_sim/stats`` of a running simulator (one instance's, given its secret key string)."""
    params = {"instance": instance_key} if instance_key else None
    response = httpx.get(control_url(api_url) + "/stats", params=params, timeout=30)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def inject_fault(api_url: str, **fault: Any) -> None:
    """``POST /_sim/faults`` (same keywords as ``SimulatedClerk.inject``). Control API, not Clerk's."""
    response = httpx.post(control_url(api_url) + "/faults", json=fault, timeout=30)
    response.raise_for_status()


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KB on Linux


def max_in_any_window(times: list[float], window_s: float = 10.0) -> int:
    """Most of the (sorted) ``times`` inside any window of ``window_s`` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def enroll_state(settings: Any, tenant: str, key: str, api_url: str) -> None:
    """Give ``settings.state_dir`` a master key and a database with ``tenant`` enrolled (verified)."""
    from clerk_sync.enrollment import EnrollOptions, enroll
    from clerk_sync.store.db import open_database
    from clerk_sync.vault import MasterKey, SecretKey, load_keyring, write_master_key_file

    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_master_key_file(settings.state_dir / "master.key", MasterKey.generate())
    db = open_database(settings.database_url)
    try:
        keyring = load_keyring(settings, env={})
        enroll(settings, db, keyring, tenant, SecretKey(key), EnrollOptions(api_url=api_url))
    finally:
        db.dispose()


async def timed_passes(
    settings: Any, db: Any, tenant: str, resources: list[str], mode: str
) -> dict[str, Any]:
    """Run one pass per resource for ``tenant``, in order; per-resource seconds, status and counts."""
    from clerk_sync.clerk.budget import BudgetRegistry
    from clerk_sync.resources import BY_NAME
    from clerk_sync.store.tenants import TenantStore
    from clerk_sync.sync import SyncContext, run_pass
    from clerk_sync.vault import load_keyring

    ctx = SyncContext(settings, db, load_keyring(settings, env={}), BudgetRegistry(settings.rate))
    row = TenantStore(db).get(tenant)
    out: dict[str, Any] = {}
    for name in resources:
        started = time.perf_counter()
        result = await run_pass(ctx, row, BY_NAME[name], mode)  # type: ignore[arg-type]
        out[name] = {
            "seconds": round(time.perf_counter() - started, 3),
            "status": result.status,
            "mode": result.mode,
            "requests": result.requests,
            "objects": result.objects,
            "events": result.events,
            **({"error": result.error} if result.error else {}),
        }
    return out
