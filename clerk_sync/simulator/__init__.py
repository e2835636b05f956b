"""A faithful fake of Clerk's Backend API, for tests, benchmarks and ``clerk-sync simulate``.

::

    sim = SimulatedClerk(seed=1, users=100_000, orgs=50, instances=None, limit_per_10s=None)
    with run_simulator(sim) as base_url:          # "http://127.0.0.1:PORT/v1"
        ...                                        # or mount sim.app with httpx.ASGITransport

Keys: ``Bearer sk_live_<name>`` opens production instance <name>, ``sk_test_<name>`` development
instance <name> (two different instances, ``ins_…`` ids derived from (environment, name)). With
``instances=None`` any ``[A-Za-z0-9]+`` name works, else only the listed names; everything else, and
a revoked key, is 401 with Clerk's error body.

Data: every instance has ``users`` users and ``orgs`` organizations (1 to 5 members each), a few
sessions per user and some invitations, all a pure function of (seed, environment, name, index).
Users are generated lazily from their index, so a million users cost no memory until changed.

API (GET only, under ``/v1``; bodies follow bapi-2026-05-12.yml):
``/instance``; ``/users`` (``limit`` 1..500, ``offset``, ``order_by`` ±created_at/updated_at/
last_active_at/last_sign_in_at (default -created_at, nulls last), ``starting_after`` (422 unless
ordered by created_at, 422 with a non-zero offset; an id of a since-deleted user still works, ids
sort like Clerk's), ``created_at_after/before``, ``last_active_at_after/before/since``,
``last_sign_in_at_after/before``, repeatable ``user_id`` (``-id`` excludes)); ``/users/count`` (same
filters); ``/users/{id}`` (404 once deleted); ``/organizations`` (``{data, total_count}``, ±created_at,
``include_members_count``); ``/organizations/{id or slug}``; ``/organization_memberships`` and
``/organizations/{id}/memberships`` (``{data, total_count}``, ±created_at (default -created_at),
``user_id``); ``/sessions`` (bare array, newest first, 422 without ``user_id`` or ``client_id``,
``status``); ``/invitations`` (bare array, revoked hidden unless ``status=revoked``). Every non-GET
request to ``/v1`` is counted (``non_get``) and refused with 405. Real Clerk filters the simulator
does not implement (``/users?email_address=``, ``query``, ``organization_id``, …) are refused with a
422 ``simulator_unsupported_parameter`` instead of being silently ignored.

Rate limit per instance: at most ``limit_per_10s`` (default 1000 production / 100 development)
admitted requests in ANY 10 s window; beyond it 429, ``Retry-After`` (whole seconds until the oldest
admitted request leaves the window, at least 1) and Clerk's error body. Refused requests do not count.

Scripting (in process, thread-safe; each returns the object as the API serves it):
``inst = sim.instance("sk_live_acme")``; ``inst.create_user(**fields)`` (``email_address=`` edits the
primary address), ``update_user(id, **f)``, ``delete_user(id)`` (also memberships and sessions),
``create_org / update_org / delete_org``, ``add_membership(org_id, user_id, role=) /
update_membership / remove_membership``, ``sign_in(user_id)``, ``set_session_status(id, status)``,
``purge_session(id)``, ``create_invitation(email) / set_invitation_status(id, status)``,
``revoke_key() / restore_key()``, ``user_ids() / org_ids() / membership_ids()``; ``sim.clock_ms``
pins "now" for new objects. ``sim.on_request(fn)`` runs ``fn(inst, path, params)`` before each API
response is built; ``sim.inject(kind, count=1, path_prefix=None, instance=None, delay_s=0.0,
retry_after_s=1)`` with kind ``5xx`` (503), ``slow``, ``truncated``, ``invalid_json`` or ``429``.
``sim.stats(key=None)``: admitted, refused_429, unauthorized, non_get, requests_by_path (templates
like ``/users/{user_id}``), max_requests_in_any_10s, offset_requests and cursor_requests (``/users``
requests with a non-zero ``offset`` / with ``starting_after``), injected; without a key: summed,
plus ``by_instance``.

Control API (no auth; ``{key}`` is the secret key string; JSON bodies):
``GET /_sim/stats[?instance=KEY]``, ``POST /_sim/faults`` (inject kwargs), ``DELETE /_sim/faults``,
``POST /_sim/clock {"now_ms": n|null}``, ``GET /_sim/instances/{key}`` (instance + counts),
``POST|PATCH|DELETE /_sim/instances/{key}/users[/{id}]``, ``POST .../users/{id}/sign_in``,
``GET .../user_ids``, ``POST|PATCH|DELETE .../orgs[/{id}]``, ``GET .../org_ids``,
``POST .../memberships {"org_id","user_id","role"}``, ``PATCH|DELETE .../memberships/{id}``,
``GET .../membership_ids``, ``POST .../sessions/{id}/status {"status"}``, ``DELETE .../sessions/{id}``
(purge), ``POST .../invitations {"email"}``, ``POST .../invitations/{id}/status {"status"}``,
``POST .../revoke``, ``POST .../restore``.
"""

from clerk_sync.simulator.runner import run_simulator, serve
from clerk_sync.simulator.sim import SimulatedClerk
from clerk_sync.simulator.state import InstanceState

__all__ = ["InstanceState", "SimulatedClerk", "run_simulator", "serve"]
