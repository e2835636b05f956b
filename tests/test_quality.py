"""Lint, format and type checks are part of the suite, so `.ci/run` keeps them clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["clerk_sync", "tests", "benchmarks"]


def _tool(name: str) -> list[str]:
    local = Path(sys.executable).parent / name
    if local.exists():
        return [str(local)]
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [found]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean() -> None:
    result = _run([*_tool("ruff"), "check", *TARGETS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run([*_tool("ruff"), "format", "--check", *TARGETS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run([*_tool("mypy")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_code_path_sends_anything_but_get_to_clerk() -> None:
    # The Clerk client is the only module that builds requests to Clerk; it must not even name another verb.
    source = "\n".join(p.read_text() for p in (ROOT / "clerk_sync" / "clerk").glob("*.py"))
    for verb in ("post(", "put(", "patch(", "delete(", '"POST"', '"PUT"', '"PATCH"', '"DELETE"'):
        assert verb not in source.replace('method != "GET"', ""), verb
