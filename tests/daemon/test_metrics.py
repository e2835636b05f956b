"""Prometheus exposition and /healthz over real HTTP on loopback."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from clerk_sync.errors import ConfigError
from clerk_sync.metrics import DaemonMetrics, MetricsServer, parse_address


@dataclass
class FakePass:
    """Shaped like sync.PassResult."""

    tenant: str
    resource: str
    mode: str = "incremental"
    status: str = "ok"
    requests: int = 5
    pages: int = 2
    objects: int = 700
    events: int = 3
    rate_limited: int = 1
    seconds: float = 1.5
    error: str | None = None


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  (http on loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def health() -> dict[str, object]:
    return {"ok": True, "reason": "ok"}


@pytest.fixture
def served(health: dict[str, object]) -> Iterator[tuple[DaemonMetrics, str]]:
    metrics = DaemonMetrics()
    server = MetricsServer("127.0.0.1:0", metrics, lambda: (bool(health["ok"]), str(health["reason"])))
    server.start()
    yield metrics, f"http://127.0.0.1:{server.port}"
    server.stop()


def test_pass_results_become_metrics(served: tuple[DaemonMetrics, str]) -> None:
    metrics, base = served
    metrics.observe_pass(FakePass("acme", "users"), finished_s=1_700_000_000.0)
    metrics.observe_pass(FakePass("acme", "users", status="failed", error="boom"), finished_s=1_700_000_100.0)
    metrics.set_budget_source(lambda seconds: [("ins_1", 250, 500)])
    status, body = get(base + "/metrics")
    assert status == 200
    got = samples(body)
    acme_users = (("resource", "users"), ("tenant", "acme"))
    assert got[("clerk_sync_last_success_timestamp_seconds", acme_users)] == 1_700_000_000.0
    assert got[("clerk_sync_events_total", acme_users)] == 6
    assert got[("clerk_sync_rate_limited_total", (("tenant", "acme"),))] == 2
    assert got[("clerk_sync_requests_total", (("status", "429"), ("tenant", "acme")))] == 2
    assert got[("clerk_sync_requests_total", (("status", "ok"), ("tenant", "acme")))] == 8
    assert (
        got[("clerk_sync_pass_duration_seconds_count", (("mode", "incremental"), ("resource", "users")))] == 2
    )
    failed = (("mode", "incremental"), ("resource", "users"), ("result", "failed"), ("tenant", "acme"))
    assert got[("clerk_sync_passes_total", failed)] == 1
    assert got[("clerk_sync_budget_utilisation_ratio", (("instance", "ins_1"),))] == 0.5


def test_per_status_breakdown_is_used_when_the_pass_has_one(served: tuple[DaemonMetrics, str]) -> None:
    metrics, base = served
    result = FakePass("beta", "organizations")
    result.by_status = {200: 7, 503: 2}  # type: ignore[attr-defined]
    result.retries = 2  # type: ignore[attr-defined]
    metrics.observe_pass(result, finished_s=1.0)
    got = samples(get(base + "/metrics")[1])
    assert got[("clerk_sync_requests_total", (("status", "503"), ("tenant", "beta")))] == 2
    assert got[("clerk_sync_retries_total", (("tenant", "beta"),))] == 2


def test_registry_is_private() -> None:
    metrics = DaemonMetrics()
    metrics.observe_pass(FakePass("gamma", "users"), finished_s=1.0)
    assert (
        REGISTRY.get_sample_value("clerk_sync_events_total", {"tenant": "gamma", "resource": "users"}) is None
    )


def test_healthz_follows_the_check(served: tuple[DaemonMetrics, str], health: dict[str, object]) -> None:
    _, base = served
    assert get(base + "/healthz") == (200, b"ok\n")
    health.update(ok=False, reason="scheduler loop stalled for 12 s")
    assert get(base + "/healthz") == (503, b"scheduler loop stalled for 12 s\n")
    assert get(base + "/nope")[0] == 404


def test_a_crashing_health_check_is_unhealthy() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("db driver exploded")

    server = MetricsServer("127.0.0.1:0", DaemonMetrics(), broken)
    server.start()
    try:
        status, body = get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        server.stop()
    assert status == 503
    assert b"RuntimeError" in body


def test_stop_releases_the_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    server = MetricsServer("127.0.0.1:0", DaemonMetrics(), lambda: (True, "ok"))
    server.start()
    server.stop()
    assert {t.name for t in threading.enumerate()} == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # noqa: S104  (parsing only)
        ("[::1]:9464", ("::1", 9464)),
        ("localhost", ("localhost", 9464)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:http", "127.0.0.1:70000"])
def test_parse_address_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text)


def test_serves_on_ipv6_loopback() -> None:
    server = MetricsServer("[::1]:0", DaemonMetrics(), lambda: (True, "ok"))
    try:
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert get(f"http://[::1]:{server.port}/healthz") == (200, b"ok\n")
    finally:
        server.stop()
