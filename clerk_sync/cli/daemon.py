"""``clerk-sync run`` (the daemon, or ``--once``) and ``clerk-sync status``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from clerk_sync.cli.app import STATE, app
from clerk_sync.logs import setup_logging


@app.command()
def run(
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Run every job once and exit: 0 all succeeded, 1 a pass failed, 75 interrupted."
        ),
    ] = False,
) -> None:
    """Run the daemon: scheduled passes for every tenant until SIGTERM (reload tenants on SIGHUP)."""
    from clerk_sync.daemon import serve

    settings = STATE.settings
    setup_logging(STATE.log_format or settings.log.format, "debug" if STATE.debug else settings.log.level)
    code = asyncio.run(serve(settings, once=once))
    raise typer.Exit(code)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show every tenant and resource: last success, last error, objects, pending events, next run, budget."""
    from clerk_sync.status import build_status, render_text
    from clerk_sync.store.db import open_database

    settings = STATE.settings
    db = open_database(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s, pool_size=1)
    try:
        report = build_status(db, settings)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(render_text(report))
