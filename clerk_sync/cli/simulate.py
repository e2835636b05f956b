"""``clerk-sync simulate``: serve the fake Clerk Backend API on loopback."""

from __future__ import annotations

from typing import Annotated

import typer

from clerk_sync.cli.app import app, fail


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on (keep it loopback).")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0 = any free port).")
    ] = 8080,
    users: Annotated[int, typer.Option(min=0, help="Users per instance.")] = 1000,
    orgs: Annotated[int, typer.Option(min=0, help="Organizations per instance.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 1,
    instances: Annotated[
        str | None,
        typer.Option(help="Comma-separated instance names to accept (default: any name)."),
    ] = None,
    limit_per_10s: Annotated[
        int | None,
        typer.Option(
            min=1, help="Requests per 10 s per instance (default 1000 production, 100 development)."
        ),
    ] = None,
) -> None:
    """Serve a simulated Clerk Backend API until Ctrl-C; keys are sk_live_<name> / sk_test_<name>."""
    from clerk_sync.simulator import SimulatedClerk, serve

    names = [n.strip() for n in instances.split(",") if n.strip()] if instances else None
    sim = SimulatedClerk(seed=seed, users=users, orgs=orgs, instances=names, limit_per_10s=limit_per_10s)

    def announce(url: str) -> None:
        typer.echo(f"simulating Clerk at {url}")
        typer.echo(
            "keys: Bearer sk_live_<name> (production), sk_test_<name> (development); stats at /_sim/stats"
        )

    try:
        serve(sim, host, port, on_ready=announce)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
