"""The HTTP face of the simulator: Clerk's Backend API (GET only) under ``/v1``.

Every request goes through the same gate, in Clerk's order: method (non-GET -> 405, counted),
key (401), injected 429, the instance's rate limit (429 + Retry-After), other injected faults, the
test hooks, then the endpoint. Parameter rules (limits, cursor 422s) follow bapi-2026-05-12.yml.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clerk_sync.simulator.ratelimit import SlidingWindowLimit
from clerk_sync.simulator.sim import SimulatedClerk
from clerk_sync.simulator.state import (
    INVITATION_STATUSES,
    SESSION_STATUSES,
    USER_ORDER_FIELDS,
    ApiError,
    InstanceState,
    UserQuery,
    unprocessable,
)

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_IDS = 100
JSON = "application/json"

Handler = Callable[[InstanceState, QueryParams, dict[str, str]], Any]


def error_body(status: int, code: str, message: str, long_message: str) -> bytes:
    """Clerk's error shape (``ClerkErrors``)."""
    return orjson.dumps(
        {
            "errors": [{"message": message, "long_message": long_message, "code": code}],
            "clerk_trace_id": uuid.uuid4().hex,
        }
    )


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> Response:
    """An ``ApiError`` as a response."""
    body = error_body(exc.status, exc.code, exc.message, exc.long_message)
    return Response(body, status_code=exc.status, media_type=JSON, headers=headers)


# ---------------------------------------------------------------------- parameters


def int_param(params: QueryParams, name: str, default: int | None = None) -> int | None:
    """An integer query parameter, or 422."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise unprocessable(f"`{name}` must be an integer.", "form_param_format_invalid") from None


def bool_param(params: QueryParams, name: str) -> bool:
    """A boolean query parameter (``true``/``false``), or 422."""
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise unprocessable(f"`{name}` must be true or false.", "form_param_format_invalid")


def paging(params: QueryParams) -> tuple[int, int]:
    """``limit`` (1..500, default 10) and ``offset`` (>= 0, default 0)."""
    limit = int_param(params, "limit", 10)
    offset = int_param(params, "offset", 0)
    assert limit is not None and offset is not None
    if not 1 <= limit <= 500:
        raise unprocessable("`limit` must be between 1 and 500.")
    if offset < 0:
        raise unprocessable("`offset` must be greater than or equal to 0.")
    return limit, offset


def order_param(
    params: QueryParams, allowed: tuple[str, ...], default: str = "-created_at"
) -> tuple[str, bool]:
    """(field, descending) of ``order_by``; only the first one counts, as in Clerk. ``+`` may arrive as a space."""
    values = params.getlist("order_by")
    raw = values[0] if values else default
    descending = raw.startswith("-")
    name = raw.lstrip("+- ")
    if name not in allowed:
        raise unprocessable(
            f"`order_by` must be one of {', '.join(allowed)} (optionally prefixed by + or -)."
        )
    return name, descending


def id_list(params: QueryParams, name: str) -> tuple[list[str] | None, set[str]]:
    """(included, excluded) ids of a repeatable ``+id`` / ``-id`` parameter."""
    values = params.getlist(name)
    if not values:
        return None, set()
    if len(values) > MAX_IDS:
        raise unprocessable(f"`{name}` accepts up to {MAX_IDS} values.")
    included: list[str] = []
    excluded: set[str] = set()
    for value in values:
        if value.startswith("-"):
            excluded.add(value[1:])
        else:
            included.append(value.lstrip("+ "))
    return (included if included else None), excluded


def user_query(params: QueryParams) -> UserQuery:
    """The filters shared by ``/users`` and ``/users/count``."""
    included, excluded = id_list(params, "user_id")
    return UserQuery(
        created_at_after=int_param(params, "created_at_after"),
        created_at_before=int_param(params, "created_at_before"),
        last_active_at_after=int_param(params, "last_active_at_after"),
        last_active_at_before=int_param(params, "last_active_at_before"),
        last_active_at_since=int_param(params, "last_active_at_since"),
        last_sign_in_at_after=int_param(params, "last_sign_in_at_after"),
        last_sign_in_at_before=int_param(params, "last_sign_in_at_before"),
        include_ids=included,
        exclude_ids=excluded,
    )


# ---------------------------------------------------------------------- endpoints


def get_instance(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /instance``."""
    return inst.instance_object()


def make_list_users(sim: SimulatedClerk) -> Handler:
    """``GET /users`` (counts cursor and offset use)."""

    def list_users(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
        limit, offset = paging(params)
        q = user_query(params)
        q.order_field, q.descending = order_param(params, USER_ORDER_FIELDS)
        starting_after = params.get("starting_after") or None
        if starting_after is not None:
            if q.order_field != "created_at":
                raise unprocessable(
                    "`starting_after` can only be used when ordering by `created_at` "
                    "(order_by omitted, `created_at`, `+created_at` or `-created_at`)."
                )
            if offset:
                raise unprocessable("`starting_after` cannot be combined with a non-zero `offset`.")
        counters = sim.counters(inst)
        if starting_after is not None:
            counters.cursor_requests += 1
        if offset:
            counters.offset_requests += 1
        return inst.list_users(q, limit=limit, offset=offset, starting_after=starting_after)

    return list_users


def count_users(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /users/count``."""
    return {"object": "total_count", "total_count": inst.count_users(user_query(params))}


def not_found(kind: str, ident: str) -> ApiError:
    """Clerk's 404."""
    return ApiError(404, "resource_not_found", "not found", f"No {kind} was found with id {ident}")


def get_user(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /users/{user_id}``."""
    user = inst.get_user(path["id"])
    if user is None:
        raise not_found("user", path["id"])
    return user


def list_orgs(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /organizations``: ``{data, total_count}``, offset paging."""
    limit, offset = paging(params)
    _, descending = order_param(params, ("created_at",))
    orgs = inst.list_orgs(descending, bool_param(params, "include_members_count"))
    return {"data": orgs[offset : offset + limit], "total_count": len(orgs)}


def get_org(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /organizations/{organization_id}`` (id or slug)."""
    org = inst.get_org(path["id"], bool_param(params, "include_members_count"))
    if org is None:
        raise not_found("organization", path["id"])
    return org


def list_memberships(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /organization_memberships`` and ``/organizations/{id}/memberships``."""
    limit, offset = paging(params)
    _, descending = order_param(params, ("created_at",))
    org_id = path.get("id")
    if org_id is not None and not inst.org_exists(org_id):
        raise not_found("organization", org_id)
    included, _ = id_list(params, "user_id")
    total, page = inst.list_memberships(org_id, included, descending, offset, limit)
    return {"data": page, "total_count": total}


def list_sessions(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /sessions``: a bare array; ``user_id`` or ``client_id`` is required."""
    limit, offset = paging(params)
    user_id = params.get("user_id") or None
    client_id = params.get("client_id") or None
    if user_id is None and client_id is None:
        raise unprocessable("Either `user_id` or `client_id` must be provided.", "form_param_missing")
    status = params.get("status") or None
    if status is not None and (status not in SESSION_STATUSES or status == "pending"):
        raise unprocessable(
            f"`status` must be one of {', '.join(s for s in SESSION_STATUSES if s != 'pending')}."
        )
    return inst.list_sessions(user_id, client_id, status)[offset : offset + limit]


def list_invitations(inst: InstanceState, params: QueryParams, path: dict[str, str]) -> Any:
    """``GET /invitations``: a bare array; revoked ones only with ``status=revoked``."""
    limit, offset = paging(params)
    _, descending = order_param(params, ("created_at",))
    status = params.get("status") or None
    if status is not None and status not in INVITATION_STATUSES:
        raise unprocessable(f"`status` must be one of {', '.join(INVITATION_STATUSES)}.")
    return inst.list_invitations(status, descending)[offset : offset + limit]


_USER_SEARCH = (
    "email_address", "phone_number", "external_id", "username", "web3_wallet", "organization_id", "query",
    "email_address_query", "phone_number_query", "username_query", "name_query", "banned", "provider",
    "provider_user_id",
)  # fmt: skip
_MEMBER_SEARCH = (
    "email_address", "phone_number", "username", "web3_wallet", "role", "query", "email_address_query",
    "phone_number_query", "username_query", "name_query", "last_active_at_before", "last_active_at_after",
    "created_at_before", "created_at_after",
)  # fmt: skip
UNSUPPORTED: dict[str, tuple[str, ...]] = {
    "/users": _USER_SEARCH,
    "/users/count": _USER_SEARCH,
    "/organizations": (
        "query",
        "user_id",
        "organization_id",
        "include_missing_member_with_elevated_permissions",
    ),
    "/organizations/{organization_id}/memberships": _MEMBER_SEARCH,
    "/invitations": ("query",),
}
"""Filters Clerk has and the simulator does not: refused loudly (422) rather than silently ignored."""


def refuse_unsupported(template: str, params: QueryParams) -> None:
    """422 when a request uses a real Clerk filter that the simulator does not implement."""
    used = [name for name in UNSUPPORTED.get(template, ()) if name in params]
    if used:
        raise ApiError(
            422,
            "simulator_unsupported_parameter",
            "is not supported by the simulator",
            f"The simulator does not implement {', '.join(used)} on {template}.",
        )


def routes(sim: SimulatedClerk) -> list[tuple[re.Pattern[str], str, Handler]]:
    """(pattern, template for stats, handler) of every endpoint, relative to /v1."""
    table: list[tuple[str, str, Handler]] = [
        (r"/instance", "/instance", get_instance),
        (r"/users", "/users", make_list_users(sim)),
        (r"/users/count", "/users/count", count_users),
        (r"/users/(?P<id>[^/]+)", "/users/{user_id}", get_user),
        (r"/organizations", "/organizations", list_orgs),
        (r"/organizations/(?P<id>[^/]+)", "/organizations/{organization_id}", get_org),
        (
            r"/organizations/(?P<id>[^/]+)/memberships",
            "/organizations/{organization_id}/memberships",
            list_memberships,
        ),
        (r"/organization_memberships", "/organization_memberships", list_memberships),
        (r"/sessions", "/sessions", list_sessions),
        (r"/invitations", "/invitations", list_invitations),
    ]
    return [(re.compile(pattern + "/?"), template, handler) for pattern, template, handler in table]


class ClerkApi:
    """The ``/v1`` gate and dispatcher."""

    def __init__(self, sim: SimulatedClerk) -> None:
        self.sim = sim
        self.table = routes(sim)

    def match(self, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        """The endpoint of a path (relative to /v1)."""
        for pattern, template, handler in self.table:
            m = pattern.fullmatch(path)
            if m:
                return template, handler, m.groupdict()
        return None

    async def handle(self, request: Request) -> Response:
        """Gate and serve one request to ``/v1/...``."""
        sim = self.sim
        path = "/" + request.path_params.get("rest", "")
        if request.method != "GET":
            return self._refuse_method(request)
        inst = sim.authenticate(request.headers.get("authorization"))
        if inst is None:
            with sim.lock:
                sim.global_unauthorized += 1
                key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                with contextlib.suppress(KeyError):
                    sim.counters(sim.instance(key)).unauthorized += 1
            return error_response(
                ApiError(
                    401,
                    "authentication_invalid",
                    "Invalid authentication",
                    "Unable to authenticate the request, you need to supply an active API key",
                )
            )
        fault = sim.take_fault(path, inst)
        if fault is not None and fault.kind == "429":
            return _too_many(str(max(1, int(fault.retry_after_s))))
        with sim.lock:
            wait_s = sim.limit(inst).try_admit()
            counters = sim.counters(inst)
            if wait_s is not None:
                counters.refused_429 += 1
            else:
                counters.admitted += 1
        if wait_s is not None:
            return _too_many(SlidingWindowLimit.retry_after_header(wait_s))
        found = self.match(path)
        with sim.lock:
            counters.requests_by_path[found[0] if found else "(unknown)"] += 1
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.kind == "5xx":
            return error_response(
                ApiError(
                    503,
                    "service_unavailable",
                    "Service unavailable",
                    "The service is temporarily unavailable.",
                )
            )
        if found is None:
            return error_response(
                ApiError(404, "resource_not_found", "not found", f"No route for GET {path}")
            )
        template, handler, path_params = found
        try:
            refuse_unsupported(template, request.query_params)
            sim.run_hooks(inst, path, request.query_params)
            body = orjson.dumps(handler(inst, request.query_params, path_params))
        except ApiError as exc:
            return error_response(exc)
        if fault is not None and fault.kind == "truncated":
            body = body[: max(1, len(body) // 2)]
        elif fault is not None and fault.kind == "invalid_json":
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        return Response(body, media_type=JSON)

    def _refuse_method(self, request: Request) -> Response:
        sim = self.sim
        with sim.lock:
            sim.global_non_get += 1
            key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            with contextlib.suppress(KeyError):
                sim.counters(sim.instance(key)).non_get += 1
        exc = ApiError(
            405,
            "request_method_not_allowed",
            "method not allowed",
            f"The simulator is read-only: {request.method} is refused and counted.",
        )
        return error_response(exc, headers={"Allow": "GET"})


def _too_many(retry_after: str) -> Response:
    body = error_body(
        429, "too_many_requests", "Too many requests", "Too many requests, please try again later."
    )
    return Response(body, status_code=429, media_type=JSON, headers={"Retry-After": retry_after})


def build_app(sim: SimulatedClerk) -> Starlette:
    """The simulator's ASGI app."""
    from clerk_sync.simulator.control import control_routes

    api = ClerkApi(sim)
    return Starlette(
        routes=[
            Route("/v1", api.handle, methods=ALL_METHODS),
            Route("/v1/{rest:path}", api.handle, methods=ALL_METHODS),
            *control_routes(sim),
        ]
    )
