"""Prometheus metrics and ``/healthz`` for the daemon, served from a small thread on loopback.

Off unless ``metrics.address`` is set. The registry is our own (never prometheus-client's global
one), so tests and several daemons in one process do not share counters. The server runs in a
thread rather than on the event loop on purpose: when the loop is stuck, ``/healthz`` still answers
— with 503, because the loop's heartbeat went stale — instead of timing out.

Label values are tenant names and resource names only; nothing secret ever becomes a label.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from clerk_sync.errors import ConfigError
from clerk_sync.logs import log

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464

BudgetSource = Callable[[float], Iterable[tuple[str, int, int]]]
"""Given ``seconds``, yields ``(instance_id, requests in the last seconds, capacity_per_10s)`` per instance."""

HealthCheck = Callable[[], tuple[bool, str]]
"""Returns ``(healthy, one-line reason)``."""


def parse_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port`` to ``(host, port)``; host defaults to loopback."""
    text = address.strip()
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host, port_text = inner, rest.lstrip(":") or str(DEFAULT_PORT)
    elif ":" in text:
        host_part, _, port_text = text.rpartition(":")
        host = host_part or DEFAULT_HOST
    elif not text.isdigit():
        host, port_text = text, str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"config error: `metrics.address` must be host:port (got {address!r})")
    return host, int(port_text)


class _BudgetCollector(Collector):
    """Budget utilisation read from the live budgets at scrape time (no bookkeeping in between)."""

    def __init__(self) -> None:
        self.source: BudgetSource | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "clerk_sync_budget_used_requests",
            "Requests sent in the last 10 s, per Clerk instance",
            labels=["instance"],
        )
        util = GaugeMetricFamily(
            "clerk_sync_budget_utilisation_ratio",
            "Requests in the last 10 s over the budget per 10 s, per Clerk instance",
            labels=["instance"],
        )
        if self.source is not None:
            for instance_id, n, capacity in self.source(10.0):
                used.add_metric([instance_id], n)
                util.add_metric([instance_id], n / capacity if capacity else 0.0)
        yield used
        yield util


class DaemonMetrics:
    """Every metric the daemon exports, on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clerk_sync_requests", "Requests to Clerk, by HTTP status", ["tenant", "status"], registry=r
        )
        self.rate_limited = Counter(
            "clerk_sync_rate_limited", "429 answers from Clerk", ["tenant"], registry=r
        )
        self.retries = Counter("clerk_sync_retries", "Requests retried", ["tenant"], registry=r)
        self.passes = Counter(
            "clerk_sync_passes",
            "Finished passes, by result",
            ["tenant", "resource", "mode", "result"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "clerk_sync_pass_duration_seconds",
            "Wall time of one pass",
            ["resource", "mode"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
            registry=r,
        )
        self.events = Counter(
            "clerk_sync_events", "Change events emitted", ["tenant", "resource"], registry=r
        )
        self.objects_seen = Counter(
            "clerk_sync_objects_seen", "Objects read from Clerk by passes", ["tenant", "resource"], registry=r
        )
        self.objects_mirrored = Gauge(
            "clerk_sync_objects_mirrored", "Live objects in the mirror", ["tenant", "resource"], registry=r
        )
        self.last_success = Gauge(
            "clerk_sync_last_success_timestamp_seconds",
            "When the last successful pass finished",
            ["tenant", "resource"],
            registry=r,
        )
        self.passes_running = Gauge("clerk_sync_passes_running", "Passes in flight", registry=r)
        self.tenants = Gauge("clerk_sync_tenants", "Tenants scheduled", registry=r)
        self.heartbeat = Gauge(
            "clerk_sync_loop_heartbeat_timestamp_seconds", "Last tick of the scheduler loop", registry=r
        )
        self._budgets = _BudgetCollector()
        r.register(self._budgets)

    def set_budget_source(self, source: BudgetSource) -> None:
        """Where budget utilisation is read from at scrape time."""
        self._budgets.source = source

    def observe_pass(self, result: Any, finished_s: float) -> None:
        """Record one finished pass (a ``PassResult``)."""
        tenant = _name(getattr(result, "tenant", ""))
        resource = str(getattr(result, "resource", ""))
        mode = str(getattr(result, "mode", ""))
        status = str(getattr(result, "status", ""))
        self.passes.labels(tenant, resource, mode, status).inc()
        if status == "skipped":
            return
        self.pass_duration.labels(resource, mode).observe(float(getattr(result, "seconds", 0.0) or 0.0))
        by_status: dict[int, int] | None = getattr(result, "by_status", None)
        if by_status:
            for code, n in by_status.items():
                self.requests.labels(tenant, str(code)).inc(n)
        elif getattr(result, "requests", 0):
            # Without a per-status breakdown: the 429s are known, the rest is counted as answered.
            limited = int(getattr(result, "rate_limited", 0) or 0)
            self.requests.labels(tenant, "429").inc(limited)
            self.requests.labels(tenant, "ok").inc(max(0, int(result.requests) - limited))
        self.rate_limited.labels(tenant).inc(int(getattr(result, "rate_limited", 0) or 0))
        self.retries.labels(tenant).inc(int(getattr(result, "retries", 0) or 0))
        self.events.labels(tenant, resource).inc(int(getattr(result, "events", 0) or 0))
        self.objects_seen.labels(tenant, resource).inc(int(getattr(result, "objects", 0) or 0))
        if status == "ok":
            self.last_success.labels(tenant, resource).set(finished_s)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def _name(tenant: Any) -> str:
    return str(getattr(tenant, "name", tenant))


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` from a daemon thread."""

    def __init__(self, address: str, metrics: DaemonMetrics, health: HealthCheck) -> None:
        self.host, self.requested_port = parse_address(address)
        self.metrics = metrics
        self.health = health
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in the background; raises OSError when the address is taken."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    try:
                        ok, reason = outer.health()
                    except Exception as exc:  # a broken check is an unhealthy service, not a crash
                        ok, reason = False, f"health check failed: {type(exc).__name__}"
                    self._reply(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found\n", "text/plain; charset=utf-8")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every 15 s would drown the journal

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        self._server = server_class((self.host, self.requested_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="clerk-sync-metrics", daemon=True
        )
        self._thread.start()
        log(logger, "metrics.listening", address=f"{self.host}:{self.port}")

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
