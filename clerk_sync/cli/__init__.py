"""Command-line interface. Each module of this package registers its commands on ``app``."""

from clerk_sync.cli import app as _app_module
from clerk_sync.cli.app import app, main

# Command modules (importing them registers their commands).
from clerk_sync.cli import deliver  # noqa: E402,F401  (deliver, sinks)
from clerk_sync.cli import simulate  # noqa: E402,F401  (simulate)
from clerk_sync.cli import tenants  # noqa: E402,F401  (init, enroll, keys, seal, tenants, doctor)

__all__ = ["_app_module", "app", "main"]
