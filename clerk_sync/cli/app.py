"""The typer app and its global options. Command modules in this package register on ``app``.

Commands stay thin: parse, call one function of the package, print. ``main()`` turns every
``ClerkSyncError`` into one line on stderr and its exit code; a traceback only with ``--debug``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from clerk_sync import __version__
from clerk_sync.config import Settings, load_settings
from clerk_sync.errors import ClerkSyncError
from clerk_sync.logs import redact

app = typer.Typer(
    name="clerk-sync",
    help="Mirror Clerk instances into SQL and turn every change into a webhook-shaped event.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class AppState:
    """What the global options decided; settings are loaded on first use."""

    config_path: Path | None = None
    debug: bool = False
    log_format: str | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """Settings from the config file and environment (loaded once)."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


STATE = AppState()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clerk-sync {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config file (else $CLERK_SYNC_CONFIG, ./clerk-sync.toml)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="auto | json | text (default: config log.format).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if log_format is not None and log_format not in ("auto", "json", "text"):
        raise typer.BadParameter(
            f"must be auto, json or text (got {log_format!r})", param_hint="--log-format"
        )
    STATE.config_path = config
    STATE._settings = None  # a new invocation (tests run several in one process) reads config anew
    STATE.debug = debug
    STATE.log_format = log_format


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def one_line(text: str) -> str:
    """Fold a multi-line message (libpq's, for one) into the single line every error gets, keys masked."""
    return redact(" ".join(text.split()))


def main() -> None:
    """Console entry point: run the app, map our errors to one line and an exit code."""
    try:
        # Without standalone mode, typer *returns* the code of a typer.Exit instead of raising it.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ClerkSyncError as exc:
        if STATE.debug:
            raise
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # usage errors and the unexpected
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()  # typer's (vendored click) usage errors: message plus usage, exit 2
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if STATE.debug:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {one_line(str(exc))} (run with --debug for a traceback)",
            err=True,
        )
        sys.exit(1)
