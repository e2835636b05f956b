"""The simulator over real HTTP: ``run_simulator`` in a thread, the control API, and ``clerk-sync simulate``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from clerk_sync.simulator import SimulatedClerk, run_simulator
from tests.simulator.conftest import KEY


def test_run_simulator_serves_over_loopback_and_stops():
    sim = SimulatedClerk(seed=2, users=30, orgs=2)
    with run_simulator(sim, host="127.0.0.1", port=0) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            users = client.get("/users", params={"limit": 500}).json()
            assert len(users) == 30
            assert client.post("/users", json={}).status_code == 405
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get(base_url + "/instance")
    assert sim.stats()["non_get"] == 1 and sim.stats()["admitted"] == 1


def test_control_api_scripts_the_simulator():
    sim = SimulatedClerk(seed=2, users=30, orgs=2)
    with run_simulator(sim) as base_url:
        root = base_url.removesuffix("/v1")
        api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"})
        ctl = httpx.Client(base_url=f"{root}/_sim/instances/{KEY}")
        with api, ctl:
            created = ctl.post("/users", json={"first_name": "Remote"}).json()
            assert api.get(f"/users/{created['id']}").json()["first_name"] == "Remote"
            assert (
                ctl.patch(f"/users/{created['id']}", json={"last_name": "Control"}).json()["last_name"]
                == "Control"
            )
            session = ctl.post(f"/users/{created['id']}/sign_in").json()
            assert (
                ctl.post(f"/sessions/{session['id']}/status", json={"status": "ended"}).json()["status"]
                == "ended"
            )
            assert ctl.delete(f"/sessions/{session['id']}").status_code == 200
            assert api.get("/sessions", params={"user_id": created["id"]}).json() == []
            org = ctl.post("/orgs", json={"name": "Remote Org"}).json()
            mem = ctl.post("/memberships", json={"org_id": org["id"], "user_id": created["id"]}).json()
            assert ctl.get("/membership_ids").json()[-1] == mem["id"]
            inv = ctl.post("/invitations", json={"email": "x@example.com"}).json()
            assert ctl.post(f"/invitations/{inv['id']}/status", json={"status": "revoked"}).json()["revoked"]
            assert ctl.delete(f"/users/{created['id']}").json()["deleted"] is True
            assert ctl.delete(f"/users/{created['id']}").status_code == 404
            assert api.get(f"/users/{created['id']}").status_code == 404
            assert ctl.post("/revoke").status_code == 200
            assert api.get("/instance").status_code == 401
            ctl.post("/restore")
            assert httpx.post(f"{root}/_sim/faults", json={"kind": "5xx", "count": 1}).status_code == 200
            assert httpx.post(f"{root}/_sim/faults", json={"kind": "nope"}).status_code == 400
            assert api.get("/instance").status_code == 503
            assert api.get("/instance").status_code == 200
            assert (
                httpx.post(f"{root}/_sim/clock", json={"now_ms": 1_900_000_000_000}).json()["now_ms"]
                == 1_900_000_000_000
            )
            assert ctl.post("/users", json={}).json()["created_at"] == 1_900_000_000_000
            stats = httpx.get(f"{root}/_sim/stats", params={"instance": KEY}).json()
            assert stats["unauthorized"] == 1 and stats["injected"] == {"5xx": 1}
            assert httpx.get(f"{root}/_sim/instances/{KEY}").json()["users"] == 31


@pytest.mark.slow
def test_cli_simulate_prints_its_url_and_serves():
    cmd = [sys.executable, "-m", "clerk_sync", "simulate", "--port", "0", "--users", "25", "--orgs", "3",
           "--seed", "4", "--instances", "acme,beta", "--limit-per-10s", "3"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simulating Clerk at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].strip()
        assert url.endswith("/v1")
        headers = {"Authorization": "Bearer sk_live_beta"}
        codes = [
            httpx.get(f"{url}/users", headers=headers, params={"limit": 500}).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        assert len(httpx.get(f"{url}/users", headers={"Authorization": "Bearer sk_test_acme"}).json()) == 10
        assert httpx.get(f"{url}/users", headers={"Authorization": "Bearer sk_live_gamma"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode in (0, 130)
