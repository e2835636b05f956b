"""Command-line interface. Each module of this package registers its commands on ``app``."""

from clerk_sync.cli import app as _app_module

# Command modules (importing them registers their commands).
from clerk_sync.cli import (
    daemon,  # noqa: F401  (run, status)
    deliver,  # noqa: F401  (deliver, sinks)
    simulate,  # noqa: F401  (simulate)
    sync,  # noqa: F401  (sync, backfill, events, demo)
    tenants,  # noqa: F401  (init, enroll, keys, seal, tenants, doctor)
)
from clerk_sync.cli.app import app, main

__all__ = ["_app_module", "app", "main"]
