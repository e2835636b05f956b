"""sd_notify over a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clerk_sync.notify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, like the one systemd creates for ``Type=notify``."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_watchdog_stopping_arrive_in_order(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert n.status("3 tenants, 1 passes running, last error: none")
    assert n.watchdog()
    assert n.stopping()
    n.close()
    assert received(sock) == ["READY=1"]
    assert received(sock) == ["STATUS=3 tenants, 1 passes running, last error: none"]
    assert received(sock) == ["WATCHDOG=1"]
    assert received(sock) == ["STOPPING=1"]


def test_status_is_one_line(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    n.status("first\nsecond")
    n.close()
    assert received(sock) == ["STATUS=first second"]


def test_abstract_socket() -> None:
    name = f"clerk-sync-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready("starting done")
        n.close()
        assert received(sock) == ["READY=1", "STATUS=starting done"]
    finally:
        sock.close()


def test_without_systemd_everything_is_a_noop() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.watchdog_s is None
    assert not n.ready()
    assert not n.watchdog()


def test_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert not n.ready()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env=env).watchdog_s == expected


def test_a_full_queue_drops_messages_instead_of_blocking(systemd_socket: tuple[socket.socket, str]) -> None:
    """systemd not reading must never stall the daemon's event loop."""
    _, path = systemd_socket  # nobody reads it
    n = Notifier(env={"NOTIFY_SOCKET": path})
    outcomes: list[bool] = []
    sender = threading.Thread(
        target=lambda: outcomes.extend(n.status(f"s{i}") for i in range(5000)), daemon=True
    )
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "sd_notify blocked on a full socket queue"
    n.close()
    assert outcomes[0] is True
    assert outcomes[-1] is False
