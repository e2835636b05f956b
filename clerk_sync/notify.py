"""systemd's notify protocol (``Type=notify``) with the standard library: one datagram per message.

systemd passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract socket) and, with
``WatchdogSec=``, ``$WATCHDOG_USEC``. Outside systemd there is no socket and every call is a no-op,
so the daemon calls these unconditionally. Sending never raises and never blocks (the
socket is non-blocking: when systemd's queue is full the message is dropped rather than stalling
the event loop); a lost status line must not stop the service, and systemd itself notices a
missing READY or WATCHDOG and acts on it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from clerk_sync.logs import log

logger = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1`` and ``STOPPING=1`` to systemd, if it listens."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_s = _watchdog_interval_s(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notify socket."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; False when there is no socket or it failed."""
        if self.address is None:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop: a full queue on systemd's side drops this message.
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except BlockingIOError:
            log(logger, "notify.dropped", logging.DEBUG, message=lines[0].split("=", 1)[0])
            return False
        except OSError as exc:
            self.close()
            log(logger, "notify.failed", logging.WARNING, error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is done: systemd considers the service started."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line summary shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Tell the watchdog we are alive."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        """Close the socket (further sends reopen it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when there is no watchdog (or it is not ours)."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper that exec'd us with a different pid)
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
