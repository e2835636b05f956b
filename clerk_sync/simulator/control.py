"""The control API under ``/_sim``: scripting and fault injection for tests that run us in a subprocess.

Each route calls the same ``InstanceState`` / ``SimulatedClerk`` method an in-process test would.
No authentication (loopback only); ``{key}`` is the instance's secret key string. Unknown objects
answer 404, bad arguments 400, both as ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clerk_sync.simulator.sim import SimulatedClerk
from clerk_sync.simulator.state import InstanceState

Action = Callable[[InstanceState, dict[str, Any], dict[str, str]], Any]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("body must be a JSON object")
    return doc


def control_routes(sim: SimulatedClerk) -> list[Route]:
    """Routes of the control API."""

    def instance_route(path: str, method: str, action: Action) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _body(request)
                inst = sim.instance(request.path_params["key"])
                result = action(inst, body, dict(request.path_params))
            except KeyError as exc:
                return _json({"error": f"not found: {exc.args[0] if exc.args else ''}"}, 404)
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json(result if result is not None else {"ok": True})

        return Route(f"/_sim/instances/{{key}}{path}", endpoint, methods=[method])

    async def stats(request: Request) -> Response:
        return _json(sim.stats(request.query_params.get("instance")))

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sim.clear_faults()
            return _json({"ok": True})
        try:
            sim.inject(**(await _body(request)))
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True})

    async def clock(request: Request) -> Response:
        body = await _body(request)
        sim.clock_ms = None if body.get("now_ms") is None else int(body["now_ms"])
        return _json({"now_ms": sim.now_ms()})

    async def instance_info(request: Request) -> Response:
        try:
            inst = sim.instance(request.path_params["key"])
        except KeyError:
            return _json({"error": "not found"}, 404)
        return _json(
            {
                **inst.instance_object(),
                "revoked": inst.revoked,
                "users": inst.user_count(),
                "organizations": len(inst.org_ids()),
                "memberships": len(inst.membership_ids()),
            }
        )

    def ids_of(getter: Callable[[InstanceState], list[str]]) -> Action:
        return lambda inst, body, p: getter(inst)

    table: list[tuple[str, str, Action]] = [
        ("/users", "POST", lambda inst, b, p: inst.create_user(**b)),
        ("/users/{id}", "PATCH", lambda inst, b, p: inst.update_user(p["id"], **b)),
        ("/users/{id}", "DELETE", lambda inst, b, p: inst.delete_user(p["id"])),
        ("/users/{id}/sign_in", "POST", lambda inst, b, p: inst.sign_in(p["id"])),
        ("/user_ids", "GET", ids_of(InstanceState.user_ids)),
        ("/orgs", "POST", lambda inst, b, p: inst.create_org(**b)),
        ("/orgs/{id}", "PATCH", lambda inst, b, p: inst.update_org(p["id"], **b)),
        ("/orgs/{id}", "DELETE", lambda inst, b, p: inst.delete_org(p["id"])),
        ("/org_ids", "GET", ids_of(InstanceState.org_ids)),
        ("/memberships", "POST", lambda inst, b, p: inst.add_membership(**b)),
        ("/memberships/{id}", "PATCH", lambda inst, b, p: inst.update_membership(p["id"], **b)),
        ("/memberships/{id}", "DELETE", lambda inst, b, p: inst.remove_membership(p["id"])),
        ("/membership_ids", "GET", ids_of(InstanceState.membership_ids)),
        ("/sessions/{id}/status", "POST", lambda inst, b, p: inst.set_session_status(p["id"], b["status"])),
        ("/sessions/{id}", "DELETE", lambda inst, b, p: inst.purge_session(p["id"])),
        ("/invitations", "POST", lambda inst, b, p: inst.create_invitation(**b)),
        (
            "/invitations/{id}/status",
            "POST",
            lambda inst, b, p: inst.set_invitation_status(p["id"], b["status"]),
        ),
        ("/revoke", "POST", lambda inst, b, p: inst.revoke_key()),
        ("/restore", "POST", lambda inst, b, p: inst.restore_key()),
    ]
    routes: list[Route] = [
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/faults", faults, methods=["POST", "DELETE"]),
        Route("/_sim/clock", clock, methods=["POST"]),
        Route("/_sim/instances/{key}", instance_info, methods=["GET"]),
    ]
    routes += [instance_route(path, method, action) for path, method, action in table]
    return routes
