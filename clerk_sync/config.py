"""Settings: loaded from TOML, overridden from the environment, validated, frozen.

Where the file comes from, first match wins: ``--config PATH``, ``$CLERK_SYNC_CONFIG``,
``./clerk-sync.toml``; with none of them every setting takes its default.

Environment overrides (so secrets and deployment-specific values need not sit in the file):
``CLERK_SYNC_STATE_DIR``, ``CLERK_SYNC_DATABASE_URL``, ``CLERK_SYNC_API_URL``,
``CLERK_SYNC_MASTER_KEY_FILE``. (``CLERK_SYNC_MASTER_KEY`` itself is read by the vault, never
stored in Settings.)

Every validation error is one line naming the file, the key and what is expected.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from clerk_sync.errors import ConfigError

DEFAULT_API_URL = "https://api.clerk.com/v1"
CONFIG_ENV = "CLERK_SYNC_CONFIG"
DEFAULT_CONFIG_NAME = "clerk-sync.toml"


def _default_state_dir() -> Path:
    env = os.environ.get("STATE_DIRECTORY")  # systemd StateDirectory=
    if env:
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "clerk-sync"


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the mirror and outbox live."""

    url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<state_dir>/clerk-sync.db``."""
    busy_timeout_s: float = 30.0
    pool_size: int = 5


@dataclass(frozen=True)
class ClerkSettings:
    """How to reach Clerk's Backend API."""

    api_url: str = DEFAULT_API_URL
    api_version: str | None = "2025-11-10"
    """Sent as ``Clerk-API-Version``; empty string or null sends none."""


@dataclass(frozen=True)
class RateSettings:
    """What share of each instance's rate limit clerk-sync may use."""

    share: float = 0.5
    """Fraction of the instance limit (the rest is left to the customer's own app)."""
    limit_per_10s: int | None = None
    """Override the instance limit (default 1000 production, 100 development)."""


@dataclass(frozen=True)
class HttpSettings:
    """HTTP client behaviour towards Clerk."""

    timeout_s: float = 30.0
    max_connections: int = 10
    retry_attempts: int = 8
    retry_max_s: float = 300.0
    """Give up on a request after this long across all retries."""


@dataclass(frozen=True)
class VaultSettings:
    """Where the master key (and, during a rotation, older keys) come from."""

    master_key_file: Path | None = None
    old_key_files: tuple[Path, ...] = ()
    """Keys still accepted for decryption during a rotation window."""


@dataclass(frozen=True)
class SyncSettings:
    """How passes walk and diff."""

    page_size: int = 500
    concurrency: int = 4
    """Tenants synced at once by ``sync``/``backfill``."""
    incremental_overlap_s: float = 300.0
    """Re-read this much before the users watermark, for clock skew and late writes."""


@dataclass(frozen=True)
class EventsSettings:
    """What becomes an event."""

    initial: Literal["none", "created"] = "none"
    """First pass of a tenant: build the baseline silently, or emit ``*.created`` for everything."""
    extension_types: bool = True
    """Emit types Clerk has no webhook for (``invitation.*``, ``session.expired`` …)."""


@dataclass(frozen=True)
class ScheduleSettings:
    """Daemon intervals, in seconds."""

    users_incremental_s: float = 300.0
    organizations_s: float = 900.0
    organization_memberships_s: float = 900.0
    invitations_s: float = 900.0
    sessions_s: float = 300.0
    full_pass_s: float = 86400.0
    jitter_s: float = 30.0
    tenant_refresh_s: float = 60.0


@dataclass(frozen=True)
class SessionSettings:
    """How sessions are polled (see ``sessions.py``)."""

    max_requests_per_pass: int = 1000
    fresh_active_s: float = 900.0
    """Users active today have their open sessions re-checked at least this often."""
    fresh_idle_s: float = 86400.0


@dataclass(frozen=True)
class DaemonSettings:
    """The long-running service."""

    shutdown_timeout_s: float = 10.0
    lease_ttl_s: float = 60.0
    replica_id: str | None = None
    max_concurrent_passes: int = 32
    """Passes the daemon runs at once across all tenants (one per tenant at a time)."""
    deliver: bool = True
    """Deliver events to the configured sinks from the daemon (off if ``deliver --follow`` runs apart)."""
    deliver_interval_s: float = 2.0


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus endpoint; off unless ``address`` is set (e.g. ``127.0.0.1:9464``)."""

    address: str | None = None


@dataclass(frozen=True)
class LogSettings:
    """Log format and level."""

    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class SinkSettings:
    """One delivery target for events."""

    kind: Literal["webhook", "jsonl", "stdout"] = "stdout"
    name: str = ""
    url: str | None = None
    path: Path | None = None
    secret_env: str | None = None
    """Environment variable holding the ``whsec_…`` signing secret (webhook sinks)."""


@dataclass(frozen=True)
class Settings:
    """All settings, frozen after validation."""

    state_dir: Path = field(default_factory=_default_state_dir)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    clerk: ClerkSettings = field(default_factory=ClerkSettings)
    rate: RateSettings = field(default_factory=RateSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    sinks: tuple[SinkSettings, ...] = ()
    source: str = "<defaults>"
    """Where these settings came from (for messages)."""

    @property
    def database_url(self) -> str:
        """The configured URL, or the SQLite file in ``state_dir``."""
        return self.database.url or f"sqlite:///{self.state_dir / 'clerk-sync.db'}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with top-level fields changed (tests and the demo use it)."""
        return dataclasses.replace(self, **changes)


_RANGES: dict[str, tuple[float, float]] = {
    "rate.share": (0.01, 1.0),
    "rate.limit_per_10s": (1, 100_000),
    "http.timeout_s": (0.1, 3600),
    "http.max_connections": (1, 1000),
    "http.retry_attempts": (1, 100),
    "sync.page_size": (1, 500),
    "sync.concurrency": (1, 1000),
    "database.pool_size": (1, 1000),
    "daemon.max_concurrent_passes": (1, 10_000),
}


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(parts) + " (or omitted)"
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"config error in {where}: `{key}` must be {_describe(tp)} (got {value!r})")

    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        for arg in args:
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                continue
        raise bad()
    if origin is Literal:
        if value not in get_args(tp):
            raise bad()
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise bad()
        (item_tp, *_) = get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, key, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return _check_range(value, key, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return _check_range(float(value), key, where)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise bad()
        return Path(value).expanduser()
    raise bad()


def _check_range(value: float, key: str, where: str) -> Any:
    if key in _RANGES:
        lo, hi = _RANGES[key]
        if not lo <= value <= hi:
            raise ConfigError(
                f"config error in {where}: `{key}` must be between {lo:g} and {hi:g} (got {value!r})"
            )
    elif value < 0:
        raise ConfigError(f"config error in {where}: `{key}` must not be negative (got {value!r})")
    return value


def _build(cls: Any, table: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for k in table:
        if k not in names:
            dotted = f"{prefix}.{k}" if prefix else k
            known = ", ".join(sorted(names))
            raise ConfigError(f"config error in {where}: unknown key `{dotted}` (known here: {known})")
    kwargs = {}
    for k, v in table.items():
        dotted = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], dotted, where)
    return cls(**kwargs)


def find_config_file(explicit: Path | None, env: typing.Mapping[str, str]) -> Path | None:
    """The config file to read, by the documented order, or None for all defaults."""
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


_ENV_OVERRIDES = {
    "CLERK_SYNC_STATE_DIR": ("state_dir",),
    "CLERK_SYNC_DATABASE_URL": ("database", "url"),
    "CLERK_SYNC_API_URL": ("clerk", "api_url"),
    "CLERK_SYNC_MASTER_KEY_FILE": ("vault", "master_key_file"),
}


def load_settings(path: Path | None = None, env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read, override and validate settings; raise ConfigError with one clear line."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    table: dict[str, Any] = {}
    where = "<defaults>"
    if file is not None:
        where = str(file)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"config error: {file} does not exist (pass --config PATH or unset {CONFIG_ENV})"
            ) from None
        except OSError as exc:
            raise ConfigError(f"config error: cannot read {file}: {exc.strerror}") from None
        try:
            table = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error in {file}: not valid TOML ({exc})") from None
    for var, keys in _ENV_OVERRIDES.items():
        if env.get(var):
            node = table
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = env[var]
            where = f"{where} (+ ${var})" if var not in where else where
    if "sinks" in table and not isinstance(table["sinks"], list):
        raise ConfigError(f"config error in {where}: `sinks` must be an array of tables ([[sinks]])")
    settings: Settings = _build(Settings, table, "", where)
    if not settings.clerk.api_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"config error in {where}: `clerk.api_url` must be an http(s) URL (got {settings.clerk.api_url!r})"
        )
    for i, sink in enumerate(settings.sinks):
        if sink.kind == "webhook" and not sink.url:
            raise ConfigError(f"config error in {where}: `sinks[{i}].url` is required for a webhook sink")
        if sink.kind == "jsonl" and not sink.path:
            raise ConfigError(f"config error in {where}: `sinks[{i}].path` is required for a jsonl sink")
    return dataclasses.replace(settings, source=where)
