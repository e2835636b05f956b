"""Where events go: signed webhooks, JSONL files, stdout.

Every sink is at-least-once: an event whose delivery was not recorded (crash between sending and
committing the cursor) is sent again with the same id, which is the receiver's idempotency key
(``svix-id`` header for webhooks, ``clerk_sync.event_id`` in the payload).

The webhook sink POSTs to the *receiver's* URL. It has its own HTTP client: nothing here can reach
Clerk, whose client is GET-only.
"""

from __future__ import annotations

import email.utils
import os
import sys
import time
from pathlib import Path
from typing import Protocol

import httpx

from clerk_sync import __version__
from clerk_sync.config import SinkSettings
from clerk_sync.delivery.signing import SigningSecret
from clerk_sync.errors import ClerkSyncError, ConfigError
from clerk_sync.store.outbox import StoredEvent


class DeliveryError(ClerkSyncError):
    """A sink could not take an event; ``retry_after_s`` overrides the backoff schedule."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, disabled: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.disabled = disabled


class Sink(Protocol):
    """Takes one event at a time, in sequence order per tenant."""

    name: str

    async def send(self, event: StoredEvent) -> None:
        """Deliver or raise DeliveryError."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())


class WebhookSink:
    """POSTs each event like Clerk (via Svix) does: same body shape, same signature headers."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: SigningSecret,
        *,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret
        self._http = httpx.AsyncClient(
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": f"clerk-sync/{__version__}", "Content-Type": "application/json"},
        )

    async def send(self, event: StoredEvent) -> None:
        """POST the event; 2xx is success, 410 disables the sink, everything else is retried."""
        body = event.payload.encode()
        headers = self._secret.headers(event.event_id, int(time.time()), body)
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {self.name}: {type(exc).__name__} posting to {self.url}") from None
        if response.is_success:
            return
        if response.status_code == 410:
            raise DeliveryError(
                f"webhook {self.name}: the receiver answered 410 Gone; delivery to it is paused until its "
                "cursor is reset or the sink removed",
                disabled=True,
            )
        raise DeliveryError(
            f"webhook {self.name}: receiver answered {response.status_code}",
            retry_after_s=_retry_after(response) if response.status_code in (429, 503) else None,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


class JsonlSink:
    """Appends one JSON envelope per line to a file (0600), fsynced after each event."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    async def send(self, event: StoredEvent) -> None:
        """Append and fsync."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, event.payload.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeliveryError(f"jsonl {self.name}: cannot append to {self.path}: {exc.strerror}") from None

    async def aclose(self) -> None:
        """Nothing to release."""


class StdoutSink:
    """Prints one JSON envelope per line (for pipes and the demo)."""

    def __init__(self, name: str = "stdout") -> None:
        self.name = name

    async def send(self, event: StoredEvent) -> None:
        """Print and flush."""
        sys.stdout.write(event.payload + "\n")
        sys.stdout.flush()

    async def aclose(self) -> None:
        """Nothing to release."""


def build_sinks(configs: tuple[SinkSettings, ...], env: dict[str, str] | os._Environ[str]) -> list[Sink]:
    """Sinks from settings; a webhook's signing secret comes from the environment variable it names."""
    sinks: list[Sink] = []
    for i, cfg in enumerate(configs):
        name = cfg.name or f"{cfg.kind}-{i}"
        if cfg.kind == "webhook":
            var = cfg.secret_env or "CLERK_SYNC_WEBHOOK_SECRET"
            if not env.get(var):
                raise ConfigError(
                    f"sink {name}: environment variable {var} must hold the whsec_… signing secret "
                    "(generate one with `clerk-sync sinks secret`)"
                )
            sinks.append(WebhookSink(name, str(cfg.url), SigningSecret(env[var])))
        elif cfg.kind == "jsonl":
            assert cfg.path is not None  # validated in config
            sinks.append(JsonlSink(name, cfg.path))
        else:
            sinks.append(StdoutSink(name))
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ConfigError("sinks: every sink needs a distinct name")
    return sinks
