"""``clerk-sync deliver`` and ``clerk-sync sinks …``: move outbox events to the configured sinks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Annotated

import typer

from clerk_sync.cli.app import STATE, app, fail
from clerk_sync.delivery.signing import SigningSecret
from clerk_sync.delivery.sinks import build_sinks
from clerk_sync.delivery.worker import Deliverer
from clerk_sync.logs import setup_logging
from clerk_sync.store import sinks as cursors
from clerk_sync.store.db import open_database

sinks_app = typer.Typer(help="Delivery sinks (webhooks, JSONL, stdout).", no_args_is_help=True)
app.add_typer(sinks_app, name="sinks")


@app.command()
def deliver(
    follow: Annotated[bool, typer.Option("--follow", help="Keep delivering until interrupted.")] = False,
    interval_s: Annotated[
        float, typer.Option("--interval", min=0.01, help="Seconds between rounds with --follow.")
    ] = 2.0,
) -> None:
    """Deliver pending events to every configured sink (once, or continuously with --follow)."""
    settings = STATE.settings
    setup_logging(STATE.log_format or settings.log.format, "debug" if STATE.debug else settings.log.level)
    if not settings.sinks:
        raise fail("no sinks configured: add a [[sinks]] table to the config (see config.example.toml)", 2)
    db = open_database(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s)
    deliverer = Deliverer(db, build_sinks(settings.sinks, os.environ))

    async def rounds() -> int:
        failed = 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        if follow:  # SIGTERM/SIGINT (systemctl stop, Ctrl-C): finish the round in flight, exit 0
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
        try:
            while True:
                report = await deliverer.deliver_once()
                failed = report.failed
                if not follow or report.delivered or report.failed:  # idle rounds stay quiet
                    typer.echo(
                        f"delivered={report.delivered} failed={report.failed} waiting={report.waiting}",
                        err=True,
                    )
                if not follow:
                    return failed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
                if stop.is_set():
                    return 0
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await deliverer.aclose()

    failed = asyncio.run(rounds())
    raise typer.Exit(1 if failed else 0)


@sinks_app.command("list")
def sinks_list() -> None:
    """Configured sinks and how many events each has not yet delivered, per tenant."""
    settings = STATE.settings
    db = open_database(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s)
    if not settings.sinks:
        typer.echo("no sinks configured")
        return
    for i, cfg in enumerate(settings.sinks):
        name = cfg.name or f"{cfg.kind}-{i}"
        streams = cursors.pending_streams(db, name)
        target = cfg.url or cfg.path or "stdout"
        typer.echo(f"{name}\t{cfg.kind}\t{target}\tbacklog tenants={len(streams)}")


@sinks_app.command("secret")
def sinks_secret() -> None:
    """Print a new whsec_… signing secret for a webhook sink (give it to the receiver too)."""
    typer.echo(SigningSecret.generate())
