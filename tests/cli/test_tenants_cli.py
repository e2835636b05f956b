"""CLI for the vault and tenants: init, enroll, keys, seal, tenants, doctor, end to end on the simulator."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clerk_sync.cli import app, main
from clerk_sync.cli.app import STATE
from clerk_sync.simulator import SimulatedClerk, run_simulator
from tests.vault.conftest import LIVE_KEY, TEST_KEY, assert_no_secret


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Cli:
    """Runs commands in-process with a clean environment pointing at a temp state dir."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch, api_url: str) -> None:
        self.home = home
        self.state = home / "state"
        self.config = home / "clerk-sync.toml"
        self.config.write_text(f'state_dir = "{self.state}"\n[clerk]\napi_url = "{api_url}"\n')
        self.monkeypatch = monkeypatch
        for var in list(os.environ):
            if var.startswith("CLERK_SYNC_") or var in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
                monkeypatch.delenv(var)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("CLERK_SYNC_CONFIG", str(self.config))
        monkeypatch.chdir(home)
        self.outputs: list[str] = []

    def _reset(self) -> None:
        self.monkeypatch.setattr(STATE, "_settings", None)
        self.monkeypatch.setattr(STATE, "config_path", None)
        self.monkeypatch.setattr(STATE, "debug", False)

    def __call__(self, *args: str, input: str | None = None) -> Result:
        self._reset()
        result = CliRunner().invoke(app, list(args), input=input)
        self.outputs.append(result.output)
        assert_no_secret(result.output)
        return result

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    def main(
        self, *args: str, input: str | None = None, capsys: pytest.CaptureFixture[str]
    ) -> tuple[int, str]:
        """Run the real entry point (error mapping included); returns (exit code, stderr)."""
        self._reset()
        capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", ["clerk-sync", *args])
        if input is not None:
            import io

            self.monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert_no_secret(out + err)
        return code, err


@pytest.fixture
def sim() -> SimulatedClerk:
    return SimulatedClerk(seed=5, users=3, orgs=1)


@pytest.fixture
def api_url(sim: SimulatedClerk) -> Iterator[str]:
    with run_simulator(sim) as url:
        yield url


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_url: str) -> Cli:
    return Cli(tmp_path, monkeypatch, api_url)


@pytest.fixture
def ready(cli: Cli) -> Cli:
    cli.ok("init")
    return cli


def test_init_creates_private_state_and_never_overwrites_the_key(cli: Cli) -> None:
    out = cli.ok("init")
    key_file = cli.state / "master.key"
    assert str(cli.state) in out and f"created {key_file} (mode 0600" in out
    assert _mode(cli.state) == 0o700
    assert _mode(key_file) == 0o600
    assert _mode(cli.state / "clerk-sync.db") == 0o600
    before = key_file.read_bytes()
    again = cli.ok("init")
    assert f"using {key_file}" in again
    assert key_file.read_bytes() == before


def test_init_with_a_key_in_the_environment_writes_no_key_file(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLERK_SYNC_MASTER_KEY", cli.ok("keys", "generate").strip())
    assert "using $CLERK_SYNC_MASTER_KEY" in cli.ok("init")
    assert not (cli.state / "master.key").exists()


def test_init_creates_the_configured_key_file(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLERK_SYNC_MASTER_KEY_FILE", str(cli.home / "keys.d" / "mk"))
    (cli.home / "keys.d").mkdir()
    cli.ok("init")
    assert _mode(cli.home / "keys.d" / "mk") == 0o600
    assert not (cli.state / "master.key").exists()


def test_a_missing_database_directory_is_an_error_not_a_fresh_empty_database(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mistyped state_dir must not silently become a new empty database (status: "no tenants").
    for args in (("status",), ("tenants", "list"), ("events",), ("sync",)):
        code, err = cli.main(*args, capsys=capsys)
        assert code == 1, (args, err)
        assert err.startswith("error: the database directory") and "clerk-sync init" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not cli.state.exists()
    cli.ok("init")  # init creates it
    assert _mode(cli.state) == 0o700


def test_an_unusable_state_dir_is_one_clear_line(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = cli.home / "a-file"
    blocker.write_text("")
    for state in (blocker, blocker / "sub"):
        monkeypatch.setenv("CLERK_SYNC_STATE_DIR", str(state))
        for args in (("init",), ("status",)):
            code, err = cli.main(*args, capsys=capsys)
            assert code == 1, (args, err)
            assert "unexpected" not in err and "Traceback" not in err, err
            assert str(state) in err and len(err.strip().splitlines()) == 1, err


def test_init_creates_the_directory_of_a_configured_database_url(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_file = cli.home / "db.d" / "mirror.db"
    monkeypatch.setenv("CLERK_SYNC_DATABASE_URL", f"sqlite:///{db_file}")
    cli.ok("init")
    assert _mode(db_file.parent) == 0o700 and _mode(db_file) == 0o600


def test_enroll_and_list(ready: Cli, sim: SimulatedClerk) -> None:
    out = ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY + "\n")
    prod = sim.instance(LIVE_KEY)
    assert out.strip() == f"enrolled tenant acme: instance {prod.instance_id} (production), key sk_live_…Zz91"
    key_file = ready.home / "beta.key"
    key_file.write_text(TEST_KEY + "\n")
    out = ready.ok("enroll", "beta", "--key-file", str(key_file))
    assert f"instance {sim.instance(TEST_KEY).instance_id} (development), key sk_test_…Qq42" in out

    table = ready.ok("tenants", "list")
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["NAME", "INSTANCE", "ENV", "ENABLED"]
    assert lines[1].split()[:6] == ["acme", prod.instance_id, "production", "yes", "sk_live_…Zz91", "ok"]
    rows = json.loads(ready.ok("tenants", "list", "--json"))
    assert [(r["name"], r["environment"], r["key_status"]) for r in rows] == [
        ("acme", "production", "ok"),
        ("beta", "development", "ok"),
    ]
    assert rows[0]["instance_id"] == prod.instance_id and rows[0]["last_sync"] is None
    assert sim.stats()["non_get"] == 0


def test_key_is_never_taken_from_argv(ready: Cli) -> None:
    from typer.main import get_command

    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name in ("enroll", "seal"):
        command = commands[name]
        options = {opt for p in command.params for opt in p.opts}
        value_options = {o for p in command.params if not getattr(p, "is_flag", False) for o in p.opts}
        assert not {o for o in options if o.startswith("--key")} - {"--key-stdin", "--key-file"}
        assert value_options <= {"--key-file", "--sealed", "--public-key", "--api-url", "TENANT", "tenant"}
    result = ready("enroll", "acme", "sk_live_abcdefghijklmnop")
    assert result.exit_code == 2
    assert json.loads(ready.ok("tenants", "list", "--json")) == []


def test_no_key_source_without_a_terminal(ready: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = ready.main("enroll", "acme", capsys=capsys, input="")
    assert code == 2
    assert err.startswith("error: no key given") and "--key-stdin" in err and len(err.splitlines()) == 1


def test_on_a_terminal_the_key_is_read_with_a_hidden_prompt(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []

    def hidden_prompt(prompt: str) -> str:
        prompts.append(prompt)
        return LIVE_KEY

    monkeypatch.setattr("clerk_sync.cli.tenants.getpass.getpass", hidden_prompt)
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    code, _ = ready.main("enroll", "acme", capsys=capsys)
    assert code == 0 and prompts == ["Clerk secret key (input hidden): "]
    assert json.loads(ready.ok("tenants", "list", "--json"))[0]["key_fingerprint"] == "sk_live_…Zz91"


def test_bad_key_format(ready: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = ready.main("enroll", "acme", "--key-stdin", capsys=capsys, input="pk_live_nope\n")
    assert code == 2 and "not a Clerk secret key" in err and "Traceback" not in err


def test_second_tenant_on_the_same_instance_is_refused(
    ready: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    code, err = ready.main("enroll", "acme2", "--key-stdin", capsys=capsys, input=LIVE_KEY)
    assert code == 1 and "already enrolled as tenant acme" in err and len(err.splitlines()) == 1
    ready.ok("enroll", "acme2", "--key-stdin", "--allow-shared-instance", input=LIVE_KEY)


def test_revoked_key_is_quarantined_shown_and_cleared_by_replace(
    ready: Cli, sim: SimulatedClerk, capsys: pytest.CaptureFixture[str]
) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    ready.ok("enroll", "beta", "--key-stdin", input=TEST_KEY)
    sim.instance(LIVE_KEY).revoke_key()
    code, err = ready.main("tenants", "verify", "acme", capsys=capsys)
    assert code == 1 and err.startswith("error: Clerk rejected the secret key sk_live_…Zz91")
    rows = {r["name"]: r for r in json.loads(ready.ok("tenants", "list", "--json"))}
    assert rows["acme"]["key_status"] == "key_rejected" and rows["acme"]["key_rejected_ms"]
    assert rows["beta"]["key_status"] == "ok"
    assert "key_rejected (" in ready.ok("tenants", "list")
    doctor = ready("doctor")
    assert doctor.exit_code == 1 and "tenant acme: Clerk rejected its key" in doctor.stdout
    assert "enroll acme --replace" in doctor.stdout

    sim.instance(LIVE_KEY).restore_key()
    out = ready.ok("enroll", "acme", "--replace", "--key-stdin", input=LIVE_KEY)
    assert out.startswith("replaced the key of tenant acme")
    rows = {r["name"]: r for r in json.loads(ready.ok("tenants", "list", "--json"))}
    assert (rows["acme"]["key_status"], rows["acme"]["key_error"]) == ("ok", None)


def test_sealed_enrollment(
    ready: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    public = ready.ok("keys", "public")
    assert ready.ok("keys", "public") == public  # made once
    customer = tmp_path / "customer"
    customer.mkdir()
    (customer / "service.pub").write_text(public)

    # The customer's machine: no config, no database, no master key.
    monkeypatch.setenv("CLERK_SYNC_CONFIG", str(customer / "absent.toml"))
    monkeypatch.chdir(customer)
    sealed_text = ready.ok("seal", "--public-key", "service.pub", "--key-stdin", input=LIVE_KEY)
    assert sealed_text.startswith("clerk-sync-sealed:v1:")
    assert sorted(p.name for p in customer.iterdir()) == ["service.pub"]

    monkeypatch.setenv("CLERK_SYNC_CONFIG", str(ready.config))
    monkeypatch.chdir(ready.home)
    (ready.home / "acme.sealed").write_text(sealed_text)
    out = ready.ok("enroll", "acme", "--sealed", str(ready.home / "acme.sealed"))
    assert "enrolled tenant acme" in out and "sk_live_…Zz91" in out

    body = sealed_text.strip()
    flipped = body[:-6] + ("A" if body[-6] != "A" else "B") + body[-5:]
    (ready.home / "bad.sealed").write_text(flipped)
    code, err = ready.main("enroll", "beta", "--sealed", str(ready.home / "bad.sealed"), capsys=capsys)
    assert (
        code == 1 and err.startswith("error: the sealed key does not verify") and len(err.splitlines()) == 1
    )


def test_rotation(ready: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    ready.ok("enroll", "beta", "--key-stdin", input=TEST_KEY)
    ready.ok("keys", "public")
    new_key = ready.home / "new.key"
    ready.ok("keys", "generate", "--out", str(new_key))
    assert _mode(new_key) == 0o600
    out = ready.ok("keys", "rotate", "--new-key-file", str(new_key))
    assert "re-encrypted 2 tenant key(s) and 1 service key(s)" in out and "vault.old_key_files" in out

    monkeypatch.setenv("CLERK_SYNC_MASTER_KEY_FILE", str(new_key))
    assert ready.ok("doctor").strip() == "no problems found"
    ready.ok("tenants", "verify", "acme")

    # With only the old key, the one-line error of the issue, exit 1, no traceback.
    monkeypatch.delenv("CLERK_SYNC_MASTER_KEY_FILE")
    code, err = ready.main("tenants", "verify", "acme", capsys=capsys)
    assert code == 1
    assert err.startswith(
        "error: cannot decrypt the key of tenant acme: the master key does not match the one it was encrypted with"
    )
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_rotate_refuses_the_current_key(ready: Cli) -> None:
    result = ready("keys", "rotate", "--new-key-file", str(ready.state / "master.key"))
    assert result.exit_code == 1 and "holds the current master key" in result.output


def test_disable_enable_remove_purge(ready: Cli) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    ready.ok("enroll", "beta", "--key-stdin", input=TEST_KEY)
    ready.ok("tenants", "disable", "acme")
    assert json.loads(ready.ok("tenants", "list", "--json"))[0]["enabled"] is False
    ready.ok("tenants", "enable", "acme")
    assert "key is deleted" in ready.ok("tenants", "remove", "acme")
    assert [r["name"] for r in json.loads(ready.ok("tenants", "list", "--json"))] == ["beta"]
    removed = json.loads(ready.ok("tenants", "list", "--json", "--all"))[0]
    assert (removed["name"], removed["key_status"]) == ("acme", "removed")
    refused = ready("tenants", "remove", "beta", "--purge")
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert "purged tenant beta" in ready.ok("tenants", "remove", "beta", "--purge", "--yes")
    assert [r["name"] for r in json.loads(ready.ok("tenants", "list", "--json", "--all"))] == ["acme"]
    missing = ready("tenants", "disable", "nope")
    assert missing.exit_code == 1


def test_doctor_reports_loose_modes_and_a_missing_key(ready: Cli) -> None:
    assert ready.ok("doctor").strip() == "no problems found"
    os.chmod(ready.state, 0o755)  # noqa: S103  (the loose mode doctor must report)
    os.chmod(ready.state / "clerk-sync.db", 0o644)
    os.chmod(ready.state / "master.key", 0o640)
    result = ready("doctor")
    assert result.exit_code == 1
    findings = result.stdout.splitlines()
    assert len(findings) == 3
    assert any(f"chmod 700 {ready.state}" in f for f in findings)
    assert any("database file" in f and "chmod 600" in f for f in findings)
    assert any("master key file" in f and "chmod 600" in f for f in findings)
    (ready.state / "master.key").unlink()
    result = ready("doctor")
    assert result.exit_code == 1 and "no master key" in result.stdout


def test_no_plaintext_key_in_the_database_after_the_whole_flow(ready: Cli) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    ready.ok("enroll", "beta", "--key-stdin", "--no-verify", input=TEST_KEY)
    ready.ok("enroll", "acme", "--replace", "--key-stdin", input=LIVE_KEY)
    ready.ok("tenants", "list")
    for path in ready.state.iterdir():
        assert_no_secret(path.read_bytes())


@pytest.mark.slow
def test_real_entry_point_maps_errors_to_one_line(ready: Cli, tmp_path: Path) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLERK_SYNC_")}
    env.update(
        CLERK_SYNC_CONFIG=str(ready.config), CLERK_SYNC_MASTER_KEY=os.urandom(32).hex(), HOME=str(tmp_path)
    )
    result = subprocess.run(
        [sys.executable, "-m", "clerk_sync", "tenants", "verify", "acme"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot decrypt the key of tenant acme: the master key does not match"
    )
    assert len(result.stderr.splitlines()) == 1
    assert_no_secret(result.stdout + result.stderr)


def test_doctor_reports_undecryptable_keys_and_a_missing_database(
    ready: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    monkeypatch.setenv("CLERK_SYNC_MASTER_KEY", os.urandom(32).hex())
    result = ready("doctor")
    assert result.exit_code == 1
    assert "cannot decrypt the key of tenant acme: the master key does not match" in result.stdout
    monkeypatch.delenv("CLERK_SYNC_MASTER_KEY")
    for path in list(ready.state.iterdir()):
        if path.name.startswith("clerk-sync.db"):
            path.unlink()
    result = ready("doctor")
    assert result.exit_code == 1 and "no database at" in result.stdout
    assert not (ready.state / "clerk-sync.db").exists()  # doctor only looks, it creates nothing


def test_list_shows_the_last_sync_result(ready: Cli) -> None:
    from sqlalchemy import insert

    from clerk_sync.store.db import open_database
    from clerk_sync.store.models import SyncRun

    ready.ok("enroll", "acme", "--key-stdin", input=LIVE_KEY)
    db = open_database(f"sqlite:///{ready.state / 'clerk-sync.db'}")
    try:
        with db.transaction() as conn:
            conn.execute(
                insert(SyncRun.__table__).values(  # type: ignore[attr-defined]
                    tenant_id=1, resource="users", mode="full", started_ms=0, finished_ms=60_000, status="ok"
                )
            )
    finally:
        db.dispose()
    assert ready.ok("tenants", "list").splitlines()[1].endswith("ok users 1970-01-01 00:01:00Z")
    row = json.loads(ready.ok("tenants", "list", "--json"))[0]
    assert row["last_sync"]["status"] == "ok" and row["last_sync"]["finished_ms"] == 60_000
