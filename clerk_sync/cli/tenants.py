"""Vault and tenant commands: ``init``, ``enroll``, ``keys …``, ``seal``, ``tenants …``, ``doctor``.

A Clerk secret key is never accepted as an argument (argv is visible in ``ps`` and shell history):
it comes from a hidden prompt, ``--key-stdin``, ``--key-file`` or a sealed blob.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.engine import make_url

from clerk_sync.cli.app import STATE, app
from clerk_sync.config import Settings
from clerk_sync.enrollment import EnrollOptions, enroll, verify_tenant
from clerk_sync.errors import ClerkSyncError, VaultError
from clerk_sync.logs import setup_logging
from clerk_sync.store.db import Database, open_database, schema_version
from clerk_sync.store.tenants import KEY_REJECTED, KEY_REMOVED, KEY_UNVERIFIED, ServiceKeyStore, TenantStore
from clerk_sync.vault import (
    MASTER_KEY_ENV,
    STATE_KEY_FILE,
    Keyring,
    MasterKey,
    SecretKey,
    format_public_key,
    load_keyring,
    locate_master_key,
    parse_public_key,
    public_key_fingerprint,
    read_master_key_file,
    seal,
    unseal,
    write_master_key_file,
)

keys_app = typer.Typer(
    help="Master keys and the service key pair for sealed enrollment.", no_args_is_help=True
)
tenants_app = typer.Typer(help="List, disable, enable, verify and remove tenants.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")

KeyStdin = Annotated[bool, typer.Option("--key-stdin", help="Read the secret key from standard input.")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="Read the secret key from this file.")]


# --- helpers --------------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> SystemExit:
    """Print one error line and return the exit to raise.

    SystemExit rather than typer.Exit: ``main()`` runs click with ``standalone_mode=False``, where
    click turns typer.Exit into a return value and its code would be lost.
    """
    typer.echo(f"error: {message}", err=True)
    return SystemExit(code)


def _settings() -> Settings:
    return STATE.settings


def _interactive_logging() -> None:
    """An operator is watching: warnings (e.g. retries) as text lines, everything with --debug."""
    setup_logging(STATE.log_format or "text", "debug" if STATE.debug else "warning")


def _db(settings: Settings) -> Database:
    return open_database(
        settings.database_url,
        busy_timeout_s=settings.database.busy_timeout_s,
        pool_size=settings.database.pool_size,
    )


def _keyring(settings: Settings) -> Keyring:
    return load_keyring(settings, os.environ)


def _read_key(key_stdin: bool, key_file: Path | None) -> SecretKey:
    """The secret key from a file, stdin, or a hidden prompt on a terminal; never from argv."""
    if key_stdin and key_file is not None:
        raise fail("give the key one way: --key-stdin or --key-file, not both", 2)
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise fail(f"cannot read the key file {key_file}: {reason}", 2) from None
    elif key_stdin:
        text = sys.stdin.read()
    elif sys.stdin.isatty():
        text = getpass.getpass("Clerk secret key (input hidden): ")
    else:
        raise fail(
            "no key given: on a terminal you are prompted; otherwise use --key-stdin or --key-file PATH "
            "(a key is never accepted as an argument)",
            2,
        )
    return SecretKey(text.strip())


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _sqlite_path(settings: Settings) -> Path | None:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _make_private_dir(path: Path, what: str) -> None:
    """Create ``path`` (and missing parents) with mode 0700, or fail with one line."""
    try:
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise fail(
            f"cannot create the {what} {path}: {exc.strerror}; check state_dir / database.url"
        ) from None


# --- init and keys -------------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create the state dir (0700), the database and, if none is configured, a master key (0600)."""
    settings = _settings()
    state_dir = settings.state_dir
    if state_dir.is_dir():
        mode = _mode(state_dir)
        note = "" if mode & 0o077 == 0 else f"; WARNING: mode {mode:04o}, run `chmod 700 {state_dir}`"
        typer.echo(f"state dir: {state_dir} (exists{note})")
    else:
        _make_private_dir(state_dir, "state dir")
        typer.echo(f"state dir: {state_dir} (created, mode 0700)")
    db_path = _sqlite_path(settings)
    if db_path is not None and not db_path.parent.is_dir():
        _make_private_dir(db_path.parent, "database directory")
        typer.echo(f"database directory: {db_path.parent} (created, mode 0700)")
    db = _db(settings)
    try:
        with db.read() as conn:
            version = schema_version(conn)
    finally:
        db.dispose()
    typer.echo(f"database: {db.safe_url} (ready, schema version {version})")
    where = locate_master_key(settings, os.environ)
    if where is not None and (where.path is None or where.path.exists()):
        ring = load_keyring(settings, os.environ)  # proves it parses
        typer.echo(f"master key: using {where.describe()} (key id {ring.primary.key_id})")
        return
    path = where.path if where is not None and where.path is not None else state_dir / STATE_KEY_FILE
    key = MasterKey.generate()
    write_master_key_file(path, key)
    typer.echo(f"master key: created {path} (mode 0600, key id {key.key_id})")
    typer.echo("  back it up somewhere safe: without it no stored Clerk key can be decrypted")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the key to this new file (mode 0600) instead of stdout."),
    ] = None,
) -> None:
    """Make a new random master key (for a new deployment or a rotation)."""
    key = MasterKey.generate()
    if out is None:
        typer.echo(key.encoded())
        return
    write_master_key_file(out, key)
    typer.echo(f"wrote a new master key to {out} (mode 0600, key id {key.key_id})")


@keys_app.command("public")
def keys_public() -> None:
    """Print the service public key customers seal their Clerk key with (made on first use)."""
    settings = _settings()
    keyring = _keyring(settings)
    db = _db(settings)
    try:
        service, created = ServiceKeyStore(db).get_or_create(keyring)
    finally:
        db.dispose()
    typer.echo(format_public_key(service.public_key))
    made = "created a new key pair; " if created else ""
    typer.echo(
        f"{made}fingerprint {public_key_fingerprint(service.public_key)}. Send the line above to the customer; "
        "they run `clerk-sync seal --public-key FILE` and send back the sealed line for "
        "`clerk-sync enroll TENANT --sealed FILE`.",
        err=True,
    )


@keys_app.command("rotate")
def keys_rotate(
    new_key_file: Annotated[
        Path,
        typer.Option("--new-key-file", help="The new master key (make it with `keys generate --out F`)."),
    ],
) -> None:
    """Re-encrypt every stored secret under a new master key, in one transaction."""
    settings = _settings()
    _interactive_logging()
    keyring = _keyring(settings)
    new_key = read_master_key_file(new_key_file)
    if new_key.key_id == keyring.primary.key_id:
        raise fail(
            f"{new_key_file} holds the current master key (key id {new_key.key_id}); generate a new one"
        )
    db = _db(settings)
    try:
        counts = TenantStore(db).rotate(keyring, new_key)
    finally:
        db.dispose()
    typer.echo(
        f"re-encrypted {counts['tenants']} tenant key(s) and {counts['service_keys']} service key(s) "
        f"under master key {new_key.key_id} (was {keyring.primary.key_id})"
    )
    typer.echo(
        f"next: set vault.master_key_file = {str(new_key_file)!r} and keep the old key in "
        "vault.old_key_files until every replica has restarted with the new key; then drop the old one"
    )


# --- enrollment ------------------------------------------------------------------------------------


@app.command("seal")
def seal_command(
    public_key: Annotated[
        Path,
        typer.Option("--public-key", help="The service public key (output of `clerk-sync keys public`)."),
    ],
    key_stdin: KeyStdin = False,
    key_file: KeyFile = None,
) -> None:
    """Seal a Clerk secret key for a clerk-sync service (runs on the customer's machine; no database)."""
    try:
        public_text = public_key.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise fail(f"cannot read the public key file {public_key}", 2) from None
    public_raw = parse_public_key(public_text)
    key = _read_key(key_stdin, key_file)
    typer.echo(seal(public_raw, key))
    typer.echo(
        f"sealed {key.fingerprint} for service key {public_key_fingerprint(public_raw)}; "
        "send the line above to the operator (only that service can open it)",
        err=True,
    )


@app.command("enroll")
def enroll_command(
    tenant: Annotated[str, typer.Argument(help="Name for this customer's tenant.")],
    key_stdin: KeyStdin = False,
    key_file: KeyFile = None,
    sealed: Annotated[
        Path | None, typer.Option("--sealed", help="A sealed key file made with `clerk-sync seal`.")
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Do not call GET /instance (tenant stays unverified).")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Swap the key of an existing tenant.")] = False,
    allow_shared_instance: Annotated[
        bool, typer.Option("--allow-shared-instance", help="Allow a second tenant on an enrolled instance.")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Clerk API URL for this tenant (default clerk.api_url).")
    ] = None,
) -> None:
    """Store a customer's Clerk secret key, encrypted, after proving it works."""
    settings = _settings()
    _interactive_logging()
    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise fail(f"--api-url must be an http(s) URL (got {api_url!r})", 2)
    keyring = _keyring(settings)
    db = _db(settings)
    try:
        if sealed is not None:
            if key_stdin or key_file is not None:
                raise fail("give the key one way: --sealed, --key-stdin or --key-file", 2)
            try:
                blob = sealed.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise fail(f"cannot read the sealed key file {sealed}", 2) from None
            service = ServiceKeyStore(db).current()
            if service is None:
                raise VaultError(
                    "this service has no key pair yet, so nothing sealed can be for it: run "
                    "`clerk-sync keys public` and give its output to the customer"
                )
            key = unseal(keyring.decrypt_service_private(service), blob)
        else:
            key = _read_key(key_stdin, key_file)
        options = EnrollOptions(
            verify=not no_verify,
            replace=replace,
            allow_shared_instance=allow_shared_instance,
            api_url=api_url,
        )
        row = enroll(settings, db, keyring, tenant, key, options)
    finally:
        db.dispose()
    verb = "replaced the key of" if replace else "enrolled"
    if row.key_status == KEY_UNVERIFIED:
        typer.echo(
            f"{verb} tenant {row.name}: instance unknown (not verified), environment {row.environment} "
            f"from the key prefix, key {row.key_fingerprint}"
        )
        typer.echo(f"  it is not synced until `clerk-sync tenants verify {row.name}` succeeds")
    else:
        typer.echo(
            f"{verb} tenant {row.name}: instance {row.instance_id} ({row.environment}), key {row.key_fingerprint}"
        )


# --- tenants ---------------------------------------------------------------------------------------


def _tenant_rows(store: TenantStore, include_removed: bool) -> list[dict[str, Any]]:
    runs = store.last_runs()
    rows = []
    for t in store.list(include_removed=include_removed):
        run = runs.get(t.id) if t.id is not None else None
        rows.append(
            {
                "name": t.name,
                "instance_id": t.instance_id,
                "environment": t.environment,
                "enabled": t.enabled,
                "key_fingerprint": t.key_fingerprint,
                "key_status": t.key_status,
                "key_error": t.key_error,
                "key_rejected_ms": t.key_rejected_ms,
                "api_url": t.api_url,
                "created_ms": t.created_ms,
                "last_sync": None
                if run is None
                else {
                    "resource": run.resource,
                    "status": run.status,
                    "started_ms": run.started_ms,
                    "finished_ms": run.finished_ms,
                    "error": run.error,
                },
            }
        )
    return rows


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    include_removed: Annotated[bool, typer.Option("--all", help="Include removed tenants.")] = False,
) -> None:
    """Every tenant with its instance, key status and last sync result."""
    settings = _settings()
    db = _db(settings)
    try:
        rows = _tenant_rows(TenantStore(db), include_removed)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no tenants yet: enroll one with `clerk-sync enroll NAME`")
        return
    header = ["NAME", "INSTANCE", "ENV", "ENABLED", "KEY", "KEY STATUS", "CREATED", "LAST SYNC"]
    table = [header]
    for r in rows:
        status = r["key_status"]
        if status == KEY_REJECTED:
            status += f" ({r['key_error'] or '?'} at {_fmt_ms(r['key_rejected_ms'])})"
        last = r["last_sync"]
        last_text = (
            "-"
            if last is None
            else f"{last['status']} {last['resource']} {_fmt_ms(last['finished_ms'] or last['started_ms'])}"
        )
        table.append(
            [
                r["name"],
                r["instance_id"] or "-",
                r["environment"] or "-",
                "yes" if r["enabled"] else "no",
                r["key_fingerprint"] or "-",
                status,
                _fmt_ms(r["created_ms"]),
                last_text,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@tenants_app.command("disable")
def tenants_disable(tenant: Annotated[str, typer.Argument()]) -> None:
    """Stop syncing a tenant (key and data kept)."""
    db = _db(_settings())
    try:
        TenantStore(db).set_enabled(tenant, False)
    finally:
        db.dispose()
    typer.echo(
        f"disabled tenant {tenant}: it is skipped by every sync until `clerk-sync tenants enable {tenant}`"
    )


@tenants_app.command("enable")
def tenants_enable(tenant: Annotated[str, typer.Argument()]) -> None:
    """Resume syncing a disabled tenant."""
    db = _db(_settings())
    try:
        row = TenantStore(db).set_enabled(tenant, True)
    finally:
        db.dispose()
    note = (
        "" if row.key_status == "ok" else f" (but its key status is {row.key_status}: it is not synced yet)"
    )
    typer.echo(f"enabled tenant {tenant}{note}")


@tenants_app.command("verify")
def tenants_verify(tenant: Annotated[str, typer.Argument()]) -> None:
    """Check a tenant's stored key with Clerk (GET /instance); quarantines it if Clerk refuses."""
    settings = _settings()
    _interactive_logging()
    keyring = _keyring(settings)
    db = _db(settings)
    try:
        row = verify_tenant(settings, db, keyring, tenant)
    finally:
        db.dispose()
    typer.echo(
        f"verified tenant {row.name}: instance {row.instance_id} ({row.environment}), key {row.key_fingerprint}"
    )


@tenants_app.command("remove")
def tenants_remove(
    tenant: Annotated[str, typer.Argument()],
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete its mirror, events, watermarks, runs and cursors.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation of --purge.")] = False,
) -> None:
    """Delete a tenant's key (data kept), or with --purge the tenant and everything mirrored for it."""
    if purge and not yes:
        if not sys.stdin.isatty():
            raise fail(f"--purge deletes every row mirrored for {tenant}: pass --yes to confirm", 2)
        typer.confirm(f"delete tenant {tenant} and all its mirrored data and events?", abort=True)
    db = _db(_settings())
    try:
        counts = TenantStore(db).remove(tenant, purge=purge)
    finally:
        db.dispose()
    if purge:
        detail = ", ".join(f"{n} {table}" for table, n in counts.items() if table != "tenant")
        typer.echo(f"purged tenant {tenant} ({detail} rows deleted)")
    else:
        typer.echo(
            f"removed tenant {tenant}: its key is deleted, its mirror and events are kept "
            f"(`clerk-sync tenants remove {tenant} --purge` deletes them)"
        )


# --- doctor ----------------------------------------------------------------------------------------


def _loose(path: Path, what: str, want: int) -> str | None:
    mode = _mode(path)
    if mode & 0o077:
        return f"{what} {path} is mode {mode:04o} (readable by others): run `chmod {want:o} {path}`"
    return None


def diagnose(settings: Settings, env: dict[str, str] | os._Environ[str]) -> list[str]:
    """Problems with secrets and tenants, one line each with what to do."""
    findings: list[str] = []
    if settings.state_dir.is_dir():
        if problem := _loose(settings.state_dir, "state dir", 0o700):
            findings.append(problem)
    else:
        findings.append(f"state dir {settings.state_dir} does not exist: run `clerk-sync init`")
    db_path = _sqlite_path(settings)
    if db_path is not None:
        for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            if p.exists() and (problem := _loose(p, "database file", 0o600)):
                findings.append(problem)
    keyring: Keyring | None = None
    where = locate_master_key(settings, env)
    if where is None:
        findings.append(
            f"no master key: run `clerk-sync init`, or set ${MASTER_KEY_ENV} / vault.master_key_file"
        )
    else:
        try:
            keyring = load_keyring(settings, env)
        except ClerkSyncError as exc:
            findings.append(str(exc))
        key_files: list[Path | None] = [where.path, *settings.vault.old_key_files]
        for kp in key_files:
            if kp is not None and kp.exists() and (problem := _loose(kp, "master key file", 0o600)):
                findings.append(problem)
    if db_path is not None and not db_path.exists():
        findings.append(f"no database at {db_path}: run `clerk-sync init`")
        return findings
    db = _db(settings)
    try:
        store = TenantStore(db)
        for t in store.list():
            if t.key_status == KEY_REJECTED:
                findings.append(
                    f"tenant {t.name}: Clerk rejected its key ({t.key_error or 'no code'}) at "
                    f"{_fmt_ms(t.key_rejected_ms)}; it is skipped until `clerk-sync enroll {t.name} --replace`"
                )
            elif t.key_status == KEY_UNVERIFIED:
                findings.append(
                    f"tenant {t.name}: key never verified, so it is not synced: run `clerk-sync tenants verify {t.name}`"
                )
            if keyring is not None and t.key_status != KEY_REMOVED:
                try:
                    keyring.decrypt_tenant_key(t)
                except ClerkSyncError as exc:
                    findings.append(str(exc))
        service = ServiceKeyStore(db).current()
        if keyring is not None and service is not None:
            try:
                keyring.decrypt_service_private(service)
            except ClerkSyncError as exc:
                findings.append(str(exc))
    finally:
        db.dispose()
    return findings


@app.command()
def doctor() -> None:
    """Check file modes of secrets, the master key, and every tenant's key; exit 1 on any problem."""
    settings = _settings()
    findings = diagnose(settings, os.environ)
    for line in findings:
        typer.echo(f"problem: {line}")
    if findings:
        raise SystemExit(1)
    typer.echo("no problems found")
