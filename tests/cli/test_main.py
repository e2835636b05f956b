"""The CLI's contract with scripts: one error line, meaningful exit codes, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLERK_SYNC_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clerk_sync", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )


def test_version() -> None:
    from clerk_sync import __version__

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"clerk-sync {__version__}"


def test_malformed_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rate]\nshare = 'lots'\n")
    result = run_cli("--config", str(bad), "deliver", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "rate.share" in lines[0] and str(bad) in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["no-such-command"], ["deliver", "--no-such-flag"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_a_command_that_fails_exits_non_zero(tmp_path: Path) -> None:
    # `deliver` with no sinks configured ends the command with an error.
    result = run_cli("deliver", env={"CLERK_SYNC_STATE_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no sinks configured: add a [[sinks]] table to the config (see config.example.toml)"
    ]


def test_an_unreachable_postgresql_server_is_one_line(tmp_path: Path) -> None:
    # libpq's message spans two lines ("… Connection refused\n\tIs the server running …").
    pytest.importorskip("psycopg")
    url = "postgresql://clerk_sync:pw@127.0.0.1:1/clerk_sync"
    result = run_cli("status", env={"CLERK_SYNC_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot open the database postgresql://clerk_sync:***@")
    assert "pw" not in result.stderr and "Traceback" not in result.stderr


def test_an_out_of_range_port_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("simulate", "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_log_format_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(
        "--log-format", "jsno", "status", env={"CLERK_SYNC_STATE_DIR": str(tmp_path)}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "--log-format" in result.stderr and "Traceback" not in result.stderr
