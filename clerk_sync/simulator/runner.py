"""Serve a ``SimulatedClerk`` over real HTTP on loopback: in a background thread or blocking.

The socket is bound before uvicorn starts, so port 0 works and the URL is known at once.
Access logs are off: they would be the hot path at 100 pages/s, and control URLs contain keys.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from clerk_sync.simulator.sim import SimulatedClerk

STARTUP_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only disables Nagle on accepted sockets whose listener says TCP,
    # and with Nagle on every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server(sim: SimulatedClerk, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        sim.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def base_url(host: str, port: int) -> str:
    """``http://host:port/v1`` (IPv6 hosts bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


@contextlib.contextmanager
def run_simulator(sim: SimulatedClerk, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``sim`` in a background thread; yields the base URL (ending in ``/v1``); stops on exit."""
    sock = _bind(host, port)
    server = _server(sim, host, sock.getsockname()[1])
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="clerk-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Clerk simulator did not start")
            time.sleep(0.01)
        yield base_url(host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
        sock.close()


def serve(
    sim: SimulatedClerk, host: str = "127.0.0.1", port: int = 0, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve ``sim`` in this thread until SIGINT/SIGTERM; ``on_ready(url)`` once the socket is bound."""
    sock = _bind(host, port)
    server = _server(sim, host, sock.getsockname()[1])
    if on_ready is not None:
        on_ready(base_url(host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
