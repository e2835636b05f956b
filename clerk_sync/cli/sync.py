"""``clerk-sync sync``, ``backfill``, ``events`` and ``demo``.

Exit codes of ``sync`` and ``backfill`` (cron and systemd timers read them): 0 every pass
succeeded; 1 a pass failed; 75 (EX_TEMPFAIL) nothing failed but a pass was skipped (another
process holds the tenant) or interrupted (SIGINT/SIGTERM stops at the next page boundary,
committed work kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from clerk_sync.cli.app import STATE, app
from clerk_sync.config import Settings
from clerk_sync.logs import setup_logging
from clerk_sync.resources import Resource, resolve
from clerk_sync.store.db import Database, open_database
from clerk_sync.store.models import Tenant

EXIT_TEMPFAIL = 75

TenantArgs = Annotated[list[str] | None, typer.Argument(help="Tenants (default: every active tenant).")]
ResourceOpt = Annotated[
    list[str] | None,
    typer.Option("--resource", "-r", help="Resource to sync (repeatable; default: all of them)."),
]


def _fail(message: str, code: int = 1) -> SystemExit:
    typer.echo(f"error: {message}", err=True)
    return SystemExit(code)


def _open(settings: Settings) -> Database:
    return open_database(
        settings.database_url,
        busy_timeout_s=settings.database.busy_timeout_s,
        pool_size=settings.database.pool_size,
    )


def _select_tenants(db: Database, names: Sequence[str] | None) -> list[Tenant]:
    from clerk_sync.store.tenants import TenantStore

    store = TenantStore(db)
    if not names:
        return store.active()
    active = {t.name for t in store.active()}
    out = []
    for name in names:
        tenant = store.get(name)  # raises TenantNotFoundError (one line, exit 1)
        if tenant.name not in active:
            raise _fail(
                f"tenant {name} is not active (disabled, removed or its key was rejected): "
                "see `clerk-sync tenants list`",
                1,
            )
        out.append(tenant)
    return out


def _resources(ctx: Any, names: Sequence[str] | None) -> list[Resource]:
    chosen = resolve(list(names or []))
    if names:
        missing = [r.name for r in chosen if not ctx.supports(r)]
        if missing:
            raise _fail(f"resource {missing[0]} cannot be synced by this version", 2)
        return chosen
    return [r for r in chosen if ctx.supports(r)]


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _run_passes(
    names: Sequence[str] | None,
    resource_names: Sequence[str] | None,
    full: bool,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> list[Any]:
    from clerk_sync.clerk.budget import BudgetRegistry
    from clerk_sync.sync import SyncContext, default_handlers, sync_tenants
    from clerk_sync.vault import load_keyring

    settings = STATE.settings
    setup_logging(STATE.log_format or settings.log.format, "debug" if STATE.debug else settings.log.level)
    db = _open(settings)
    try:
        keyring = load_keyring(settings, os.environ)
        ctx = SyncContext(settings, db, keyring, BudgetRegistry(settings.rate), handlers=default_handlers())
        tenants = _select_tenants(db, names)
        resources = _resources(ctx, resource_names)
        if not tenants:
            typer.echo("no active tenants: enroll one with `clerk-sync enroll NAME`", err=True)
            return []
        if on_start is not None:
            on_start(len(tenants) * len(resources))

        async def go() -> list[Any]:
            stop = asyncio.Event()
            with _stop_on_signals(stop, asyncio.get_running_loop()):
                return await sync_tenants(ctx, tenants, resources, full=full, stop=stop, on_result=on_result)

        return asyncio.run(go())
    finally:
        db.dispose()


def _exit_code(results: Sequence[Any]) -> int:
    if any(r.status == "failed" for r in results):
        return 1
    if any(r.status in ("skipped", "interrupted") for r in results):
        return EXIT_TEMPFAIL
    return 0


def _summary(results: Sequence[Any]) -> None:
    headers = ("tenant", "resource", "mode", "result", "requests", "objects", "events", "seconds")
    rows = [
        (
            r.tenant,
            r.resource,
            r.mode,
            r.status,
            str(r.requests),
            str(r.objects),
            str(r.events),
            f"{r.seconds:.2f}",
        )
        for r in results
    ]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        typer.echo("\t".join(headers))
        for row in rows:
            typer.echo("\t".join(row))
    for r in results:
        if r.error and r.status != "ok":
            typer.echo(f"{r.status}: {r.tenant}/{r.resource}: {r.error}", err=True)


@app.command("sync")
def sync_command(
    tenants: TenantArgs = None,
    resource: ResourceOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Full passes (else users run incrementally).")] = False,
) -> None:
    """Run one pass now for each tenant and resource, then print a summary.

    Exit 0 only if every pass succeeded (1 on a failure, 75 if one was skipped or interrupted).
    """
    results = _run_passes(tenants, resource, full)
    _summary(results)
    raise SystemExit(_exit_code(results))


@app.command("backfill")
def backfill_command(tenants: TenantArgs = None, resource: ResourceOpt = None) -> None:
    """Full reconciliation of every tenant and resource (for cron / systemd timers; never prompts).

    A progress bar on a terminal, one log line per pass otherwise. Exit 0 only if every pass
    succeeded (1 on a failure, 75 if one was skipped or interrupted).
    """
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=False) as progress:
            task = progress.add_task("backfill", total=None)

            def started(n: int) -> None:
                progress.update(task, total=n)

            def done(r: Any) -> None:
                progress.update(task, advance=1, description=f"{r.tenant}/{r.resource} {r.status}")

            results = _run_passes(tenants, resource, True, started, done)
    else:
        results = _run_passes(tenants, resource, True)
    _summary(results)
    raise SystemExit(_exit_code(results))


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("events")
def events_command(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Event type (user.updated) or prefix (user); repeatable."),
    ] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events with a sequence above this.")] = 0,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many events (ignored with --follow).")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One webhook-shaped envelope per line.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (Ctrl-C to stop).")
    ] = False,
) -> None:
    """Read the outbox: the change events, oldest first."""
    from clerk_sync.store import outbox
    from clerk_sync.store.tenants import TenantStore

    settings = STATE.settings
    db = open_database(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s, pool_size=1)
    try:
        tenant_id = None
        if tenant is not None:
            tenant_id = TenantStore(db).get(tenant).id
        names = {t.id: t.name for t in TenantStore(db).list(include_removed=True)}
        last_id = 0
        printed = 0
        while True:
            with db.read() as conn:
                rows = outbox.read(
                    conn,
                    tenant_id=tenant_id,
                    types=type_ or (),
                    after_sequence=after,
                    after_id=last_id,
                    limit=limit if not follow else 1000,
                )
            for row_id, e in rows:
                last_id = row_id
                printed += 1
                if as_json:
                    typer.echo(e.payload)
                else:
                    env = e.envelope()
                    changed = ",".join(env.get("clerk_sync", {}).get("changed_fields") or [])
                    typer.echo(
                        f"{e.sequence:>6}  {_fmt_ms(e.created_ms)}  {names.get(e.tenant_id, e.tenant_id)}  "
                        f"{e.type:<32} {e.object_id}" + (f"  [{changed}]" if changed else "")
                    )
            if not follow:
                break
            sys.stdout.flush()
            try:
                time.sleep(1.0)
            except KeyboardInterrupt:
                break
    finally:
        db.dispose()


@app.command("demo")
def demo_command(
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Keep the demo database here (default: a temporary dir)."),
    ] = None,
    users: Annotated[int, typer.Option("--users", help="Users in the simulated instance.")] = 2000,
) -> None:
    """See it work: a simulated Clerk on loopback, a demo tenant, a baseline sync, changes, their events."""
    from clerk_sync.demo import run_demo

    if users < 10 or users > 1_000_000:
        raise _fail("--users must be between 10 and 1000000", 2)
    setup_logging(STATE.log_format or "text", "debug" if STATE.debug else "warning")
    if state_dir is not None:
        code = run_demo(state_dir, users, echo=typer.echo)
    else:
        with tempfile.TemporaryDirectory(prefix="clerk-sync-demo-") as tmp:
            code = run_demo(Path(tmp), users, echo=typer.echo)
    raise SystemExit(code)
