"""Walkers against a small fake list server: parameters, stop conditions, resume, extra walks."""

from __future__ import annotations

from typing import Any

import httpx

from clerk_sync.clerk.walk import Page, walk
from clerk_sync.resources import INVITATIONS, ORGANIZATIONS, USERS
from tests.clerk.conftest import MakeClient


class FakeLists:
    """Serves ``/users`` (array, cursor or offset), ``/organizations`` (data envelope) and ``/invitations``."""

    def __init__(self, n_users: int = 0, n_orgs: int = 0, n_invitations: int = 0, n_revoked: int = 0) -> None:
        self.users = [{"id": f"user_{i:04d}", "object": "user"} for i in range(n_users)]
        self.orgs = [{"id": f"org_{i:04d}", "object": "organization"} for i in range(n_orgs)]
        self.invitations = [{"id": f"inv_{i:04d}", "status": "pending"} for i in range(n_invitations)]
        self.invitations += [{"id": f"inv_r{i:04d}", "status": "revoked"} for i in range(n_revoked)]
        self.queries: list[list[tuple[str, str]]] = []
        self.bad_pages = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = list(request.url.params.multi_items())
        self.queries.append(query)
        params = dict(query)
        limit = int(params.get("limit", "10"))
        offset = int(params.get("offset", "0"))
        path = request.url.path.removeprefix("/v1")
        if self.bad_pages:
            self.bad_pages -= 1
            return httpx.Response(200, json={"unexpected": "shape"})
        if path == "/users":
            rows = self.users
            if "starting_after" in params:
                ids = [u["id"] for u in rows]
                rows = rows[ids.index(params["starting_after"]) + 1 :]
            return httpx.Response(200, json=rows[offset : offset + limit])
        if path == "/organizations":
            return httpx.Response(
                200, json={"data": self.orgs[offset : offset + limit], "total_count": len(self.orgs)}
            )
        if path == "/invitations":
            status = params.get("status")
            rows = [i for i in self.invitations if (i["status"] == "revoked") == (status == "revoked")]
            return httpx.Response(200, json=rows[offset : offset + limit])
        return httpx.Response(404)


async def collect(pages: Any) -> list[Page]:
    return [page async for page in pages]


async def test_users_walk_by_cursor_in_created_at_order(make_client: MakeClient) -> None:
    server = FakeLists(n_users=5)
    client = make_client(transport=httpx.MockTransport(server))

    pages = await collect(walk(client, USERS, page_size=2))

    assert [[u["id"] for u in p.items] for p in pages] == [
        ["user_0000", "user_0001"],
        ["user_0002", "user_0003"],
        ["user_0004"],
    ]
    assert [p.next_cursor for p in pages] == ["user_0001", "user_0003", None]
    assert pages[-1].last
    cursors = [dict(q).get("starting_after") for q in server.queries]
    assert cursors == [None, "user_0001", "user_0003"]
    assert all(dict(q)["order_by"] == "+created_at" and dict(q)["limit"] == "2" for q in server.queries)
    assert not any("offset" in dict(q) for q in server.queries)


async def test_a_full_last_page_costs_one_empty_page(make_client: MakeClient) -> None:
    server = FakeLists(n_users=4)
    pages = await collect(walk(make_client(transport=httpx.MockTransport(server)), USERS, page_size=2))

    assert [len(p.items) for p in pages] == [2, 2, 0]


async def test_users_walk_resumes_after_a_cursor(make_client: MakeClient) -> None:
    server = FakeLists(n_users=5)
    client = make_client(transport=httpx.MockTransport(server))

    pages = await collect(walk(client, USERS, page_size=2, after_cursor="user_0001"))

    assert [u["id"] for p in pages for u in p.items] == ["user_0002", "user_0003", "user_0004"]
    assert dict(server.queries[0])["starting_after"] == "user_0001"


async def test_offset_walk_stops_at_total_count_without_an_extra_request(make_client: MakeClient) -> None:
    server = FakeLists(n_orgs=6)
    client = make_client(transport=httpx.MockTransport(server))

    pages = await collect(walk(client, ORGANIZATIONS, page_size=3))

    assert [len(p.items) for p in pages] == [3, 3]
    assert [p.total_count for p in pages] == [6, 6]
    assert [dict(q)["offset"] for q in server.queries] == ["0", "3"]
    assert [p.next_cursor for p in pages] == ["3", None]


async def test_offset_walk_resumes_from_an_offset_or_a_page_token(make_client: MakeClient) -> None:
    server = FakeLists(n_orgs=7)
    client = make_client(transport=httpx.MockTransport(server))

    from_offset = await collect(walk(client, ORGANIZATIONS, page_size=3, start_offset=3))
    from_token = await collect(walk(client, ORGANIZATIONS, page_size=3, after_cursor="6"))

    assert [u["id"] for p in from_offset for u in p.items] == [f"org_{i:04d}" for i in range(3, 7)]
    assert [u["id"] for p in from_token for u in p.items] == ["org_0006"]


async def test_extra_walks_follow_the_base_walk(make_client: MakeClient) -> None:
    server = FakeLists(n_invitations=3, n_revoked=2)
    client = make_client(transport=httpx.MockTransport(server))

    pages = await collect(walk(client, INVITATIONS, page_size=2))

    assert [u["id"] for p in pages for u in p.items] == [
        "inv_0000",
        "inv_0001",
        "inv_0002",
        "inv_r0000",
        "inv_r0001",
    ]
    assert [p.walk_params for p in pages] == [(), (), (("status", "revoked"),), (("status", "revoked"),)]
    assert [dict(q).get("status") for q in server.queries] == [None, None, "revoked", "revoked"]


async def test_caller_params_are_sent_on_every_page(make_client: MakeClient) -> None:
    server = FakeLists(n_users=3)
    client = make_client(transport=httpx.MockTransport(server))

    await collect(walk(client, USERS, page_size=2, params=[("created_at_after", "1700000000000")]))

    assert all(("created_at_after", "1700000000000") in q for q in server.queries)


async def test_a_wrong_shaped_page_is_fetched_again(make_client: MakeClient) -> None:
    server = FakeLists(n_users=3)
    server.bad_pages = 1
    client = make_client(transport=httpx.MockTransport(server))

    pages = await collect(walk(client, USERS, page_size=2))

    assert [u["id"] for p in pages for u in p.items] == ["user_0000", "user_0001", "user_0002"]
    assert client.stats.retries == 1


async def test_pages_arrive_one_at_a_time(make_client: MakeClient) -> None:
    server = FakeLists(n_users=10)
    client = make_client(transport=httpx.MockTransport(server))

    async for page in walk(client, USERS, page_size=2):
        assert len(server.queries) == page.number + 1  # the next page is not fetched ahead
        if page.number == 1:
            break
    assert len(server.queries) == 2
