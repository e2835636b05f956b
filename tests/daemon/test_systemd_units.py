"""The unit files: what ops rely on is in them, and systemd itself accepts them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clerk_sync.config import DaemonSettings

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = UNITS / "clerk-sync.service"
BACKFILL = UNITS / "clerk-sync-backfill.service"
TIMER = UNITS / "clerk-sync-backfill.timer"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections to (key, value) pairs; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{section}.{key}: {found}"
    return found[0]


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "h": 3600, "": 1}
    m = re.fullmatch(r"(\d+)(s|min|h|)", value)
    assert m, value
    return int(m.group(1)) * units[m.group(2)]


def test_service_is_notify_with_watchdog_reload_and_restart() -> None:
    unit = parse_unit(SERVICE)
    assert one(unit, "Service", "Type") == "notify"
    assert seconds(one(unit, "Service", "WatchdogSec")) > 0
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    exec_start = one(unit, "Service", "ExecStart").split()
    assert exec_start[0] == "/opt/clerk-sync/bin/clerk-sync"
    assert exec_start[-1] == "run"
    assert "--config" in exec_start
    # systemd must wait longer than the daemon's own drain deadline before it SIGKILLs.
    assert seconds(one(unit, "Service", "TimeoutStopSec")) > DaemonSettings().shutdown_timeout_s


@pytest.mark.parametrize("path", [SERVICE, BACKFILL], ids=lambda p: p.name)
def test_secrets_state_and_hardening(path: Path) -> None:
    unit = parse_unit(path)
    assert one(unit, "Service", "LoadCredential") == "master-key:/etc/clerk-sync/master-key"
    assert one(unit, "Service", "StateDirectory") == "clerk-sync"
    assert one(unit, "Service", "DynamicUser") == "yes" or values(unit, "Service", "User")
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictSUIDSGID",
        "ProtectKernelTunables",
    ):
        assert one(unit, "Service", key) == "yes", key
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert one(unit, "Service", "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6"
    assert "@system-service" in values(unit, "Service", "SystemCallFilter")
    assert not any("CLERK_SYNC_MASTER_KEY=" in v for v in values(unit, "Service", "Environment"))


def test_backfill_is_a_oneshot_started_daily_by_its_timer() -> None:
    service = parse_unit(BACKFILL)
    assert one(service, "Service", "Type") == "oneshot"
    assert one(service, "Service", "ExecStart").split()[-1] == "backfill"
    # `backfill` exits 75 when the daemon held a tenant's lease: that is not a failed unit.
    assert one(service, "Service", "SuccessExitStatus") == "75"
    timer = parse_unit(TIMER)
    assert one(timer, "Timer", "OnCalendar") == "daily"
    assert one(timer, "Timer", "Persistent") == "true"
    assert seconds(one(timer, "Timer", "RandomizedDelaySec")) > 0
    assert one(timer, "Install", "WantedBy") == "timers.target"


def _verifiable_copies(tmp_path: Path) -> list[Path]:
    """Copies whose ExecStart names an executable that exists here (verify checks it)."""
    out = []
    for src in (SERVICE, BACKFILL, TIMER):
        dst = tmp_path / src.name
        dst.write_text(src.read_text().replace("/opt/clerk-sync/bin/clerk-sync", sys.executable))
        out.append(dst)
    return out


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    units = _verifiable_copies(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # verify reports unknown keys and bad values as warnings without failing: none allowed.
    problems = [ln for ln in proc.stderr.splitlines() if "clerk-sync" in ln]
    assert problems == []


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify test above can fail: a misspelt key is reported."""
    assert SYSTEMD_ANALYZE is not None
    service, *_ = _verifiable_copies(tmp_path)
    service.write_text(service.read_text().replace("Type=notify", "Typo=notify"))
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Typo" in proc.stderr


@needs_systemd_analyze
def test_security_exposure_stays_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    service, *_ = _verifiable_copies(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", "--no-pager", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level" in proc.stdout
