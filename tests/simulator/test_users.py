"""``GET /users``, ``/users/count`` and ``/users/{id}``: paging, the spec's 422 rules, filters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clerk_sync.simulator import SimulatedClerk
from tests.simulator.conftest import KEY


async def cursor_walk(api: httpx.AsyncClient, order_by: str = "+created_at", limit: int = 100) -> list[dict]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": limit, "order_by": order_by}
        if after:
            params["starting_after"] = after
        r = await api.get("/users", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page
        if len(page) < limit:
            return out
        after = page[-1]["id"]


async def offset_walk(api: httpx.AsyncClient, order_by: str, limit: int = 100) -> list[dict]:
    out: list[dict[str, Any]] = []
    while True:
        r = await api.get("/users", params={"limit": limit, "offset": len(out), "order_by": order_by})
        page = r.json()
        out += page
        if len(page) < limit:
            return out


async def test_cursor_walk_returns_every_user_once_in_created_order(
    api: httpx.AsyncClient, sim: SimulatedClerk
):
    users = await cursor_walk(api)
    assert [u["id"] for u in users] == sim.instance(KEY).user_ids()
    assert len(users) == 1234
    created = [u["created_at"] for u in users]
    assert created == sorted(created) and len(set(created)) == len(created)
    assert sim.stats(KEY)["cursor_requests"] == 12 and sim.stats(KEY)["offset_requests"] == 0


async def test_descending_cursor_and_default_order(api: httpx.AsyncClient, sim: SimulatedClerk):
    desc = await cursor_walk(api, order_by="-created_at", limit=200)
    assert [u["id"] for u in desc] == list(reversed(sim.instance(KEY).user_ids()))
    default = (await api.get("/users", params={"limit": 5})).json()
    assert [u["id"] for u in default] == [u["id"] for u in desc[:5]]


async def test_offset_walk_matches_cursor_walk_and_is_counted(api: httpx.AsyncClient, sim: SimulatedClerk):
    by_offset = await offset_walk(api, "created_at")
    assert [u["id"] for u in by_offset] == sim.instance(KEY).user_ids()
    assert sim.stats(KEY)["offset_requests"] == 12


async def test_plus_sign_sent_unencoded_still_orders_ascending(api: httpx.AsyncClient, sim: SimulatedClerk):
    r = await api.get("/users?limit=3&order_by=+created_at")
    assert [u["id"] for u in r.json()] == sim.instance(KEY).user_ids()[:3]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"offset": -1},
        {"starting_after": "USER", "order_by": "-updated_at"},
        {"starting_after": "USER", "order_by": "last_active_at"},
        {"starting_after": "USER", "offset": 10},
        {"starting_after": "user_nonsense"},
        {"order_by": "shoe_size"},
        {"created_at_after": "yesterday"},
    ],
)
async def test_invalid_parameters_are_422_with_clerk_errors(
    api: httpx.AsyncClient, sim: SimulatedClerk, params
):
    first = sim.instance(KEY).user_ids()[0]
    params = {k: (first if v == "USER" else v) for k, v in params.items()}
    r = await api.get("/users", params=params)
    assert r.status_code == 422
    body = r.json()
    assert body["errors"][0]["code"].startswith("form_param")
    assert body["errors"][0]["long_message"]


async def test_starting_after_allows_created_at_orderings_and_zero_offset(
    api: httpx.AsyncClient, sim: SimulatedClerk
):
    ids = sim.instance(KEY).user_ids()
    for order in ("created_at", "+created_at"):
        r = await api.get(
            "/users", params={"starting_after": ids[9], "order_by": order, "limit": 2, "offset": 0}
        )
        assert [u["id"] for u in r.json()] == ids[10:12]
    r = await api.get("/users", params={"starting_after": ids[9], "order_by": "-created_at", "limit": 2})
    assert [u["id"] for u in r.json()] == [ids[8], ids[7]]


async def test_deleting_between_cursor_pages_skips_nobody(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    before = inst.user_ids()
    doomed = [before[99], before[100], before[150]]  # the cursor itself, and one ahead

    @sim.on_request
    def delete_after_first_page(inst_, path, params):
        if params.get("starting_after") == before[99] and inst.get_user(doomed[0]):
            for uid in doomed:
                inst.delete_user(uid)

    users = await cursor_walk(api)
    assert [u["id"] for u in users] == [uid for uid in before if uid not in doomed[1:]]


async def test_deleting_between_offset_pages_shifts_rows(api: httpx.AsyncClient, sim: SimulatedClerk):
    """Offset paging is unstable under deletion, as on Clerk: a live user is skipped."""
    inst = sim.instance(KEY)
    before = inst.user_ids()

    @sim.on_request
    def delete_early_user(inst_, path, params):
        if params.get("offset") == "100" and inst.get_user(before[0]):
            inst.delete_user(before[0])

    users = await offset_walk(api, "+created_at")
    assert before[100] not in {u["id"] for u in users}
    assert len(users) == len(before) - 1  # before[0] was served before it went


async def test_created_users_come_last_and_updates_move_updated_order(
    api: httpx.AsyncClient, sim: SimulatedClerk
):
    inst = sim.instance(KEY)
    new = inst.create_user(first_name="Newton", email_address="newton@example.com")
    assert new["email_addresses"][0]["email_address"] == "newton@example.com"
    users = await cursor_walk(api)
    assert users[-1]["id"] == new["id"] and users[-1]["first_name"] == "Newton"
    old = inst.user_ids()[3]
    inst.update_user(old, first_name="Renamed")
    top = (await api.get("/users", params={"order_by": "-updated_at", "limit": 2})).json()
    assert top[0]["id"] == old and top[0]["first_name"] == "Renamed"
    assert top[1]["id"] == new["id"]
    everyone = await offset_walk(api, "-updated_at", limit=500)
    stamps = [u["updated_at"] for u in everyone]
    assert stamps == sorted(stamps, reverse=True) and len(everyone) == 1235


@pytest.mark.parametrize("field", ["last_active_at", "last_sign_in_at"])
async def test_ordering_by_activity_puts_nulls_last(api: httpx.AsyncClient, field: str):
    for direction, reverse in (("+", False), ("-", True)):
        users = await offset_walk(api, direction + field, limit=500)
        values = [u[field] for u in users]
        present = [v for v in values if v is not None]
        assert present == sorted(present, reverse=reverse)
        assert values[len(present) :] == [None] * (len(values) - len(present))
        assert 0 < len(present) < len(values)


async def test_filters_and_counts_agree_with_the_data(api: httpx.AsyncClient, sim: SimulatedClerk):
    everyone = await cursor_walk(api, limit=500)
    mid = everyone[600]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"created_at_after": mid["created_at"]}, lambda u: u["created_at"] > mid["created_at"]),
        ({"created_at_before": mid["created_at"]}, lambda u: u["created_at"] < mid["created_at"]),
        (
            {"created_at_after": everyone[100]["created_at"], "created_at_before": mid["created_at"]},
            lambda u: everyone[100]["created_at"] < u["created_at"] < mid["created_at"],
        ),
        (
            {"last_active_at_after": mid["created_at"]},
            lambda u: (u["last_active_at"] or 0) > mid["created_at"],
        ),
        (
            {"last_active_at_since": mid["created_at"]},
            lambda u: (u["last_active_at"] or 0) >= mid["created_at"],
        ),
        (
            {"last_active_at_before": mid["created_at"]},
            lambda u: u["last_active_at"] is not None and u["last_active_at"] < mid["created_at"],
        ),
        (
            {"last_sign_in_at_after": mid["created_at"]},
            lambda u: (u["last_sign_in_at"] or 0) > mid["created_at"],
        ),
        (
            {"last_sign_in_at_before": mid["created_at"]},
            lambda u: u["last_sign_in_at"] is not None and u["last_sign_in_at"] < mid["created_at"],
        ),
    ]
    for params, keep in cases:
        expected = [u["id"] for u in everyone if keep(u)]
        assert 0 < len(expected) < len(everyone), params
        count = (await api.get("/users/count", params=params)).json()
        assert count == {"object": "total_count", "total_count": len(expected)}, params
        got = []
        after = None
        while True:
            page_params = {**params, "limit": 500, "order_by": "+created_at"}
            if after:
                page_params["starting_after"] = after
            page = (await api.get("/users", params=page_params)).json()
            got += [u["id"] for u in page]
            if len(page) < 500:
                break
            after = page[-1]["id"]
        assert got == expected, params


async def test_count_excludes_deleted_users(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    ids = inst.user_ids()
    inst.delete_user(ids[5])
    inst.delete_user(ids[700])
    assert (await api.get("/users/count")).json()["total_count"] == 1232
    after = {"created_at_after": inst.get_user(ids[600])["created_at"]}  # type: ignore[index]
    assert (await api.get("/users/count", params=after)).json()["total_count"] == 1234 - 601 - 1


async def test_user_id_filter_is_repeatable_and_ordered(api: httpx.AsyncClient, sim: SimulatedClerk):
    ids = sim.instance(KEY).user_ids()
    wanted = [ids[3], ids[500], ids[42]]
    r = await api.get("/users", params=[("user_id", u) for u in wanted] + [("order_by", "+created_at")])
    assert [u["id"] for u in r.json()] == [ids[3], ids[42], ids[500]]
    r = await api.get("/users/count", params=[("user_id", u) for u in [*wanted, "user_unknown"]])
    assert r.json()["total_count"] == 3
    too_many = [("user_id", ids[i]) for i in range(101)]
    assert (await api.get("/users", params=too_many)).status_code == 422


async def test_get_user_and_404_once_deleted(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    uid = inst.user_ids()[10]
    r = await api.get(f"/users/{uid}")
    assert r.status_code == 200 and r.json()["id"] == uid
    assert inst.delete_user(uid) == {"object": "user", "id": uid, "deleted": True}
    r = await api.get(f"/users/{uid}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "resource_not_found"
    assert (await api.get("/users/user_2doesnotexist")).status_code == 404


async def test_users_look_like_clerk_users(api: httpx.AsyncClient):
    users = (await api.get("/users", params={"limit": 50})).json()
    for u in users:
        assert u["id"].startswith("user_") and len(u["id"]) == 32
        primary = u["email_addresses"][0]
        assert primary["id"] == u["primary_email_address_id"] and "@" in primary["email_address"]
        assert primary["verification"]["status"] == "verified"
        assert u["created_at"] > 1_600_000_000_000  # milliseconds
        assert u["last_active_at"] is None or u["last_active_at"] % 86_400_000 == 0  # day precision
    sizes = [len(httpx.Response(200, json=u).content) for u in users]
    assert 1000 <= sum(sizes) / len(sizes) <= 2500


async def test_activity_counts_follow_scripted_changes(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    ids = inst.user_ids()
    sim.clock_ms = 1_800_000_000_000
    for uid in ids[:5]:
        inst.sign_in(uid)
    inst.update_user(ids[5], last_sign_in_at=None, last_active_at=None)
    for uid in ids[10:15]:
        inst.delete_user(uid)
    inst.create_user()
    inst.sign_in(inst.create_user()["id"])
    everyone = await cursor_walk(api, limit=500)
    cut = sorted(u["last_active_at"] for u in everyone if u["last_active_at"])[300]
    cases = [
        ({"last_active_at_after": cut}, lambda u: (u["last_active_at"] or 0) > cut),
        ({"last_active_at_since": cut}, lambda u: (u["last_active_at"] or 0) >= cut),
        ({"last_active_at_before": cut}, lambda u: 0 < (u["last_active_at"] or 0) < cut),
        ({"last_sign_in_at_after": cut}, lambda u: (u["last_sign_in_at"] or 0) > cut),
        ({"last_sign_in_at_before": cut}, lambda u: 0 < (u["last_sign_in_at"] or 0) < cut),
        (
            {"last_sign_in_at_before": cut, "last_active_at_after": 0},
            lambda u: 0 < (u["last_sign_in_at"] or 0) < cut and (u["last_active_at"] or 0) > 0,
        ),
    ]
    for params, keep in cases:
        expected = sum(1 for u in everyone if keep(u))
        got = (await api.get("/users/count", params=params)).json()["total_count"]
        assert got == expected, params
