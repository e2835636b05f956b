"""ClerkClient: read-only access to one Clerk instance, with error mapping, retries and pacing.

Policy lives here (auth headers, which statuses are fatal or retriable, how long to back off);
I/O lives in the transport (``GetOnlyTransport`` around httpx's, or the simulator's ASGI app in
tests). Every attempt, first or retry, first takes a slot from the instance's ``InstanceBudget``.

Status mapping::

    2xx      JSON body (orjson), optionally validated by the caller inside the retry loop
    401/403  KeyRejectedError      fatal: the key is revoked, mistyped or not allowed
    404      NotFoundError         fatal
    429      RateLimitedError      pause the whole instance for Retry-After, then retry
    other 4xx BadRequestError      fatal: Clerk refused our parameters (a bug on our side)
    5xx, transport errors, timeouts, truncated/invalid JSON, wrong shape
             retried with exponential backoff and jitter (Retry-After honoured on 503),
             bounded by ``retry_attempts`` and ``retry_max_s`` -> RetriesExhaustedError

The secret key is only ever in the ``Authorization`` header: it is not in URLs (so httpx's own
log lines cannot show it), and messages name the key by its fingerprint.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self, TypeVar, overload

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception_type
from tenacity.stop import stop_after_delay, stop_base

from clerk_sync import __version__
from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.transport import GetOnlyTransport
from clerk_sync.config import Settings
from clerk_sync.errors import (
    BadRequestError,
    BadResponseError,
    ClerkError,
    ClerkRetriableError,
    KeyRejectedError,
    NotFoundError,
    RateLimitedError,
    RetriesExhaustedError,
    ServerError,
    TransportError,
)
from clerk_sync.logs import log, redact
from clerk_sync.vault import SecretKey

logger = logging.getLogger("clerk_sync.clerk")

T = TypeVar("T")
Params = Sequence[tuple[str, str]]
Sleep = Callable[[float], Awaitable[None]]

MAX_RETRY_AFTER_S = 600.0
"""Cap on a Retry-After we obey, so a bogus header cannot park an instance for a day."""
DEFAULT_RETRY_AFTER_S = 1.0
"""Wait after a 429 that carries no usable Retry-After."""


@dataclass(frozen=True)
class ClientOptions:
    """HTTP and retry behaviour of a ``ClerkClient``."""

    api_version: str | None = None
    """Sent as ``Clerk-API-Version`` when set."""
    timeout_s: float = 30.0
    max_connections: int = 10
    retry_attempts: int = 8
    """Attempts per request, the first included."""
    retry_max_s: float = 300.0
    """Stop retrying a request once this long has passed since its first attempt."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_scale: float = 1.0
    """Multiplies every exponential backoff wait; tests set 0 so retries do not sleep.
    Retry-After from Clerk is obeyed regardless."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClientOptions:
        """Options from ``clerk.*`` and ``http.*`` settings (keyword overrides win)."""
        values: dict[str, Any] = {
            "api_version": settings.clerk.api_version or None,
            "timeout_s": settings.http.timeout_s,
            "max_connections": settings.http.max_connections,
            "retry_attempts": settings.http.retry_attempts,
            "retry_max_s": settings.http.retry_max_s,
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class RequestStats:
    """What one client sent: attempts, retries, 429s, responses by status."""

    requests: int = 0
    """Requests sent (every attempt counts)."""
    retries: int = 0
    rate_limited: int = 0
    """429 responses."""
    transport_errors: int = 0
    by_status: Counter[int] = field(default_factory=Counter)


class _ServerErrorWithRetryAfter(ServerError):
    """A 5xx (usually 503) that told us when to come back."""

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class _FailureBudget(stop_base):
    """Stop after ``attempts`` failed attempts, not counting 429s.

    A 429 is Clerk asking us to wait, not a failure of the request: during a 429 storm a request
    keeps waiting (bounded by ``retry_max_s``) instead of burning its attempts in a few seconds.
    One instance per ``get_json`` call (it counts).
    """

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.failures = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not isinstance(outcome.exception(), RateLimitedError):
            self.failures += 1
        return self.failures >= self.attempts


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _clerk_error(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(code, message, trace id) from Clerk's error body, tolerating any other body."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    trace = body.get("clerk_trace_id")
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("code")
    message = first.get("long_message") or first.get("message")
    return (
        str(code)[:100] if code else None,
        redact(str(message))[:300] if message else None,
        str(trace)[:100] if trace else None,
    )


class ClerkClient:
    """GET-only client for one Clerk instance; use as ``async with ClerkClient(...) as client``."""

    def __init__(
        self,
        key: SecretKey,
        api_url: str,
        budget: InstanceBudget,
        options: ClientOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        label: str | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        """``label`` (the tenant name) goes into messages; ``sleep`` replaces asyncio.sleep for retry waits."""
        self.options = options or ClientOptions()
        self.api_url = api_url.rstrip("/")
        self.budget = budget
        self.label = label
        self.stats = RequestStats()
        self._fingerprint = key.fingerprint
        inner = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=self.options.max_connections,
                max_keepalive_connections=self.options.max_connections,
            ),
            retries=0,
        )
        headers = {
            "Authorization": f"Bearer {key.reveal()}",
            "User-Agent": f"clerk-sync/{__version__}",
            "Accept": "application/json",
        }
        if self.options.api_version:
            headers["Clerk-API-Version"] = self.options.api_version
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers=headers,
            transport=GetOnlyTransport(inner),
            timeout=httpx.Timeout(self.options.timeout_s),
            follow_redirects=False,
            trust_env=False,  # no netrc, no proxy env: the Authorization header is ours alone
        )
        self._sleep: Sleep = sleep or asyncio.sleep

    def __repr__(self) -> str:
        return f"ClerkClient(api_url={self.api_url!r}, key={self._fingerprint}, label={self.label!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def get_instance(self) -> dict[str, Any]:
        """``GET /instance``: proves the key works and tells the instance id and environment."""

        def check(body: Any) -> dict[str, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                raise BadResponseError("Clerk's GET /instance answer has no instance id; retrying")
            return body

        return await self.get_json("/instance", validate=check)

    @overload
    async def get_json(self, path: str, params: Params = (), *, validate: Callable[[Any], T]) -> T: ...
    @overload
    async def get_json(self, path: str, params: Params = (), *, validate: None = None) -> Any: ...
    async def get_json(
        self,
        path: str,
        params: Params = (),
        *,
        validate: Callable[[Any], T] | None = None,
    ) -> Any:
        """GET ``path`` and return its parsed JSON (or ``validate(body)``), retrying what is retriable.

        ``validate`` runs inside the retry loop: raising ``BadResponseError`` from it retries the
        request (a wrong-shaped page is treated like a truncated one).
        """
        opts = self.options
        retrying = AsyncRetrying(
            stop=_FailureBudget(opts.retry_attempts) | stop_after_delay(opts.retry_max_s),
            wait=self._wait_s,
            retry=retry_if_exception_type(ClerkRetriableError),
            before_sleep=lambda state: self._log_retry(path, state),
            sleep=self._sleep,
        )
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.stats.retries += 1
                    body = await self._send(path, params)
                    return validate(body) if validate is not None else body
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, ClerkError)
            elapsed_s = time.monotonic() - started
            cause = str(last).removesuffix("; retrying")
            raise RetriesExhaustedError(
                f"gave up on GET {path} after {exc.last_attempt.attempt_number} attempts in {elapsed_s:.0f} s "
                f"({cause}); nothing was written, try again later (scheduled passes retry by themselves); "
                "if this persists check Clerk's status page and `clerk.api_url`",
                status=last.status,
                code=last.code,
                trace_id=last.trace_id,
            ) from last
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _send(self, path: str, params: Params) -> Any:
        """One attempt: take a budget slot, send, map the outcome to a value or a ClerkError."""
        await self.budget.acquire()
        self.stats.requests += 1
        try:
            response = await self._http.get(path, params=list(params))
        except httpx.TimeoutException as exc:
            self.stats.transport_errors += 1
            raise TransportError(
                f"Clerk did not answer GET {path} within {self.options.timeout_s:g} s ({type(exc).__name__}); "
                "retrying"
            ) from exc
        except httpx.TransportError as exc:
            self.stats.transport_errors += 1
            detail = redact(str(exc))[:200] or type(exc).__name__
            raise TransportError(
                f"could not complete GET {path} at {self._http.base_url.host} ({type(exc).__name__}: {detail}); "
                "check network access to Clerk"
            ) from exc
        status = response.status_code
        self.stats.by_status[status] += 1
        if 200 <= status < 300:
            try:
                return orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                raise BadResponseError(
                    f"Clerk's answer to GET {path} is not valid JSON ({len(response.content)} bytes; truncated?)",
                    status=status,
                ) from exc
        raise self._error_for(path, response)

    def _error_for(self, path: str, response: httpx.Response) -> ClerkError:
        """The ClerkError for a non-2xx response."""
        status = response.status_code
        code, message, trace = _clerk_error(response)
        what = f"{status} {code}" if code else str(status)
        said = f": {message}" if message else ""
        extra: dict[str, Any] = {"status": status, "code": code, "trace_id": trace}
        tenant = self.label or "TENANT"
        if status == 401:
            return KeyRejectedError(
                f"Clerk rejected the secret key {self._fingerprint} ({what}): it was revoked or mistyped; "
                f"re-enroll with `clerk-sync enroll {tenant} --replace`",
                **extra,
            )
        if status == 403:
            return KeyRejectedError(
                f"Clerk refused GET {path} for the secret key {self._fingerprint} ({what}){said}; "
                f"use a key of an instance that allows it and re-enroll with `clerk-sync enroll {tenant} --replace`",
                **extra,
            )
        if status == 404:
            return NotFoundError(f"Clerk has no {path} ({what}){said}", **extra)
        if status == 429:
            wait_s = parse_retry_after(response.headers.get("Retry-After"))
            self.stats.rate_limited += 1
            wait_s = DEFAULT_RETRY_AFTER_S if wait_s is None else wait_s
            # The whole instance is over its limit: stop every coroutine on it, not just this one.
            self.budget.pause_for(wait_s)
            log(
                logger,
                "clerk.rate_limited",
                logging.WARNING,
                instance=self.budget.instance_id,
                tenant=self.label,
                path=path,
                retry_after_s=wait_s,
            )
            return RateLimitedError(
                f"Clerk's rate limit for this instance is exhausted (429 on GET {path}); "
                f"pausing the instance for {wait_s:g} s",
                retry_after_s=wait_s,
                code=code,
                trace_id=trace,
            )
        if status >= 500:
            text = f"Clerk answered GET {path} with a server error ({what}){said}; retrying"
            retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after_s is not None:
                return _ServerErrorWithRetryAfter(text, retry_after_s=retry_after_s, **extra)
            return ServerError(text, **extra)
        if 300 <= status < 400:
            return BadRequestError(
                f"Clerk redirected GET {path} ({status}); check `clerk.api_url` (got {self.api_url})", **extra
            )
        return BadRequestError(
            f"Clerk refused GET {path} ({what}){said}; this is a bug in clerk-sync, please report this line",
            **extra,
        )

    def _wait_s(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: exponential backoff with jitter, or what Clerk asked for."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            # budget.pause_for() already holds back every request on the instance; the next
            # attempt waits for it in budget.acquire(), so no extra sleep here.
            return 0.0
        opts = self.options
        ceiling_s = min(opts.backoff_max_s, opts.backoff_initial_s * 2 ** (state.attempt_number - 1))
        backoff_s = opts.backoff_scale * ceiling_s * random.uniform(0.5, 1.0)
        if isinstance(exc, _ServerErrorWithRetryAfter):
            return max(backoff_s, exc.retry_after_s)
        return backoff_s

    def _log_retry(self, path: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log(
            logger,
            "clerk.retry",
            logging.INFO if isinstance(exc, RateLimitedError) else logging.WARNING,
            tenant=self.label,
            path=path,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=type(exc).__name__,
            status=getattr(exc, "status", None),
        )
