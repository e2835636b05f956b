"""ClerkClient against pytest-httpx: headers, error mapping, retries, Retry-After, GET-only, no key leaks."""

from __future__ import annotations

import logging
import re
import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pytest_httpx import HTTPXMock

from clerk_sync import __version__
from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.client import MAX_RETRY_AFTER_S, ClerkClient, ClientOptions, parse_retry_after
from clerk_sync.config import ClerkSettings, HttpSettings, Settings
from clerk_sync.errors import (
    BadRequestError,
    KeyRejectedError,
    NotFoundError,
    ReadOnlyViolationError,
    RetriesExhaustedError,
)
from clerk_sync.vault import SecretKey
from tests.clerk.conftest import API_URL, KEY_BODY, KEY_VALUE, FakeClock, MakeClient

USERS_URL = re.compile(re.escape(API_URL) + r"/users(\?.*)?$")


def clerk_error(code: str, message: str, long_message: str | None = None) -> dict[str, object]:
    return {
        "errors": [{"code": code, "message": message, "long_message": long_message or message}],
        "clerk_trace_id": "trace_123",
    }


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY_VALUE not in text
        assert KEY_BODY not in text


async def test_sends_auth_version_agent_and_accept_headers(
    httpx_mock: HTTPXMock, make_client: MakeClient
) -> None:
    httpx_mock.add_response(url=f"{API_URL}/users?limit=2&user_id=u1&user_id=u2", json=[])
    client = make_client(api_version="2025-11-10")

    body = await client.get_json("/users", [("limit", "2"), ("user_id", "u1"), ("user_id", "u2")])

    assert body == []
    (request,) = httpx_mock.get_requests()
    assert request.method == "GET"
    assert request.headers["Authorization"] == f"Bearer {KEY_VALUE}"
    assert request.headers["Clerk-API-Version"] == "2025-11-10"
    assert request.headers["User-Agent"] == f"clerk-sync/{__version__}"
    assert request.headers["Accept"] == "application/json"
    assert KEY_VALUE not in str(request.url)


async def test_no_version_header_when_none_is_configured(
    httpx_mock: HTTPXMock, make_client: MakeClient
) -> None:
    httpx_mock.add_response(url=f"{API_URL}/instance", json={"id": "ins_1", "environment_type": "production"})

    instance = await make_client(api_version=None).get_instance()

    assert instance["id"] == "ins_1"
    assert "Clerk-API-Version" not in httpx_mock.get_requests()[0].headers


async def test_401_is_key_rejected_with_clerks_code_and_no_retry(
    httpx_mock: HTTPXMock, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx_mock.add_response(
        status_code=401,
        json=clerk_error("authentication_invalid", "Invalid authentication", "The key is invalid"),
    )
    client = make_client()

    with pytest.raises(KeyRejectedError) as info:
        await client.get_json("/users")

    exc = info.value
    assert exc.status == 401
    assert exc.code == "authentication_invalid"
    assert "401 authentication_invalid" in str(exc)
    assert "clerk-sync enroll acme --replace" in str(exc)
    assert len(httpx_mock.get_requests()) == 1
    assert_no_key(str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(client), caplog.text)


async def test_403_is_key_rejected(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(status_code=403, json=clerk_error("authorization_invalid", "Not allowed"))

    with pytest.raises(KeyRejectedError, match=r"403 authorization_invalid"):
        await make_client().get_json("/users")
    assert len(httpx_mock.get_requests()) == 1


async def test_404_is_not_found(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(status_code=404, json=clerk_error("resource_not_found", "not found"))

    with pytest.raises(NotFoundError) as info:
        await make_client().get_json("/users/user_gone")
    assert info.value.status == 404
    assert "/users/user_gone" in str(info.value)


@pytest.mark.parametrize("status", [422, 400])
async def test_422_and_other_4xx_are_bad_requests_carrying_clerks_message(
    httpx_mock: HTTPXMock, make_client: MakeClient, status: int
) -> None:
    httpx_mock.add_response(
        status_code=status,
        json=clerk_error(
            "form_param_value_invalid", "is invalid", "starting_after needs created_at ordering"
        ),
    )

    with pytest.raises(BadRequestError) as info:
        await make_client().get_json("/users", [("starting_after", "u1"), ("order_by", "-updated_at")])

    assert "starting_after needs created_at ordering" in str(info.value)
    assert info.value.code == "form_param_value_invalid"
    assert len(httpx_mock.get_requests()) == 1


async def test_5xx_is_retried_then_succeeds(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(status_code=502, text="bad gateway")
    httpx_mock.add_response(status_code=500, json=clerk_error("internal", "oops"))
    httpx_mock.add_response(json=[{"id": "u1"}])
    client = make_client()

    assert await client.get_json("/users") == [{"id": "u1"}]
    assert client.stats.requests == 3
    assert client.stats.retries == 2
    assert client.stats.by_status == {502: 1, 500: 1, 200: 1}


async def test_each_retry_takes_a_budget_slot(
    httpx_mock: HTTPXMock, make_client: MakeClient, budget: InstanceBudget
) -> None:
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(json=[])

    await make_client().get_json("/users")

    assert budget.used_in_last(3600) == 3


@pytest.mark.parametrize(
    "body", [b'[{"id": "u1", "object": "us', b"<html>gateway</html>", b""], ids=["truncated", "html", "empty"]
)
async def test_invalid_json_is_retried(httpx_mock: HTTPXMock, make_client: MakeClient, body: bytes) -> None:
    httpx_mock.add_response(content=body)
    httpx_mock.add_response(json=[{"id": "u1"}])

    assert await make_client().get_json("/users") == [{"id": "u1"}]


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("eof"),
    ],
    ids=["timeout", "connect", "protocol"],
)
async def test_transport_errors_are_retried(
    httpx_mock: HTTPXMock, make_client: MakeClient, exc: Exception
) -> None:
    httpx_mock.add_exception(exc)
    httpx_mock.add_response(json={"id": "ins_1"})
    client = make_client()

    assert await client.get_instance() == {"id": "ins_1"}
    assert client.stats.transport_errors == 1


async def test_a_validation_failure_is_retried_like_a_bad_body(
    httpx_mock: HTTPXMock, make_client: MakeClient
) -> None:
    httpx_mock.add_response(json={"object": "instance"})  # no id
    httpx_mock.add_response(json={"object": "instance", "id": "ins_1"})

    assert (await make_client().get_instance())["id"] == "ins_1"


async def test_retries_are_bounded_and_name_the_last_cause(
    httpx_mock: HTTPXMock, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx_mock.add_response(
        status_code=500, json=clerk_error("internal_clerk_error", "boom"), is_reusable=True
    )
    client = make_client(retry_attempts=3)

    with pytest.raises(RetriesExhaustedError) as info:
        await client.get_json("/users")

    message = str(info.value)
    assert "after 3 attempts" in message
    assert "server error (500 internal_clerk_error)" in message
    assert "retrying" not in message  # it gave up: the message says what happens next instead
    assert "try again later" in message
    assert "\n" not in message
    assert info.value.status == 500
    assert len(httpx_mock.get_requests()) == 3
    assert "clerk.retry" in caplog.text
    assert_no_key(message, repr(info.value), "".join(traceback.format_exception(info.value)), caplog.text)


async def test_retries_are_bounded_in_total_time(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(status_code=503)

    with pytest.raises(RetriesExhaustedError):
        await make_client(retry_attempts=50, retry_max_s=0.0).get_json("/users")
    assert len(httpx_mock.get_requests()) == 1


async def test_transport_errors_never_show_the_key(
    httpx_mock: HTTPXMock, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx_mock.add_exception(httpx.ConnectError("All connection attempts failed"), is_reusable=True)
    client = make_client(retry_attempts=2)

    with pytest.raises(RetriesExhaustedError) as info:
        await client.get_json("/users")

    assert "ConnectError" in str(info.value)
    assert_no_key(
        str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)), caplog.text
    )


async def test_429_pauses_the_instance_for_retry_after_seconds_then_retries(
    httpx_mock: HTTPXMock, make_client: MakeClient, budget: InstanceBudget, clock: FakeClock
) -> None:
    httpx_mock.add_response(
        status_code=429, headers={"Retry-After": "7"}, json=clerk_error("too_many_requests", "x")
    )
    httpx_mock.add_response(json=[])
    client = make_client()
    start = clock()

    assert await client.get_json("/users") == []

    assert budget.paused_until == start + 7
    assert clock() >= start + 7  # the retry waited in budget.acquire()
    assert client.stats.rate_limited == 1
    assert client.stats.retries == 1


async def test_429_retry_after_as_http_date(
    httpx_mock: HTTPXMock, make_client: MakeClient, budget: InstanceBudget, clock: FakeClock
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    httpx_mock.add_response(status_code=429, headers={"Retry-After": when})
    httpx_mock.add_response(json=[])
    start = clock()

    await make_client().get_json("/users")

    assert 27 <= budget.paused_until - start <= 30


async def test_429_pause_holds_back_other_requests_on_the_instance(
    httpx_mock: HTTPXMock, make_client: MakeClient, budget: InstanceBudget, clock: FakeClock
) -> None:
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "12"})
    httpx_mock.add_response(json=[], is_reusable=True)
    await make_client().get_json("/users")
    resumed = clock()

    other = make_client()  # e.g. another tenant on the same instance
    budget.pause_for(5)
    await other.get_json("/users")
    assert clock() >= resumed + 5


async def test_503_retry_after_is_honoured(
    httpx_mock: HTTPXMock, make_client: MakeClient, clock: FakeClock
) -> None:
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "4"})
    httpx_mock.add_response(json=[])

    await make_client().get_json("/users")

    assert clock.sleeps == [4.0]  # backoff is scaled to 0 in tests; Retry-After is not


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=20), usegmt=True), now) == 20.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=20), usegmt=True), now) == 0.0
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after("86400", now) == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_no_method_but_get_can_leave_the_client(make_client: MakeClient, method: str) -> None:
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(200, json={"id": "x"})

    client = make_client(transport=httpx.MockTransport(server))

    # Sneak past the public API: straight to the underlying httpx client, with a body even.
    with pytest.raises(ReadOnlyViolationError, match=method):
        await client._http.request(method, "/users/u1", json={"first_name": "x"})
    with pytest.raises(ReadOnlyViolationError):
        await client._http.send(client._http.build_request(method, "/users"))

    assert seen == []
    await client.get_json("/users")
    assert seen == ["GET"]


def test_the_only_request_methods_are_gets() -> None:
    public = {name for name in dir(ClerkClient) if not name.startswith("_")}
    assert public == {"aclose", "get_instance", "get_json"}


def test_repr_shows_only_the_fingerprint(key: SecretKey, budget: InstanceBudget) -> None:
    client = ClerkClient(key, API_URL, budget)
    assert key.fingerprint in repr(client)
    assert_no_key(repr(client), str(client), repr(client.__dict__.get("options")))


async def test_a_429_storm_does_not_use_up_the_attempts(
    httpx_mock: HTTPXMock, make_client: MakeClient, clock: FakeClock
) -> None:
    for _ in range(6):
        httpx_mock.add_response(status_code=429, headers={"Retry-After": "2"})
    httpx_mock.add_response(json=[])
    client = make_client(retry_attempts=3)
    start = clock()

    assert await client.get_json("/users") == []
    assert client.stats.rate_limited == 6
    assert clock() >= start + 12


async def test_a_429_storm_is_still_bounded_in_time(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "1"})

    with pytest.raises(RetriesExhaustedError, match="429"):
        await make_client(retry_max_s=0.0).get_json("/users")


def test_options_come_from_settings() -> None:
    settings = Settings(
        clerk=ClerkSettings(api_version=""),
        http=HttpSettings(timeout_s=7.5, max_connections=3, retry_attempts=2),
    )

    opts = ClientOptions.from_settings(settings, backoff_scale=0.0)

    assert opts.api_version is None  # empty string sends no version header
    assert (opts.timeout_s, opts.max_connections, opts.retry_attempts) == (7.5, 3, 2)
    assert opts.retry_max_s == settings.http.retry_max_s
    assert opts.backoff_scale == 0.0


async def test_timeout_setting_reaches_the_request(httpx_mock: HTTPXMock, make_client: MakeClient) -> None:
    httpx_mock.add_response(json=[])

    await make_client(timeout_s=7.5).get_json("/users")

    assert httpx_mock.get_requests()[0].extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }
