"""Every object the simulator serves validates against Clerk's Backend API and webhook schemas."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clerk_sync.simulator import SimulatedClerk
from tests.simulator.conftest import KEY
from tests.simulator.openapi import BAPI, WEBHOOKS, errors

pytestmark = pytest.mark.skipif(not BAPI.is_file(), reason="Clerk OpenAPI specs not available")


def assert_valid(schema: str, objects: list[dict[str, Any]], specs=(BAPI, WEBHOOKS)) -> None:
    assert objects
    for obj in objects:
        for spec in specs:
            problems = errors(spec, schema, obj)
            assert not problems, f"{spec.name} {schema} {obj.get('id')}: {problems[:5]}"


def test_the_validator_rejects_a_broken_user():
    assert errors(BAPI, "User", {"id": "user_1", "object": "user"})
    assert errors(WEBHOOKS, "Session", {"object": "session", "tasks": []})


async def test_users_validate(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    users = (await api.get("/users", params={"limit": 200})).json()
    created = inst.create_user(first_name="Zed", email_address="zed@example.com")
    signed_in = inst.sign_in(users[0]["id"]) and inst.get_user(users[0]["id"])
    assert signed_in
    assert_valid("User", [*users, created, signed_in])
    assert any(u["phone_numbers"] for u in users) and any(len(u["email_addresses"]) > 1 for u in users)


async def test_organizations_and_memberships_validate(api: httpx.AsyncClient):
    orgs = (await api.get("/organizations", params={"include_members_count": "true", "limit": 100})).json()
    assert_valid("Organizations", [orgs], specs=(BAPI,))
    assert_valid("Organization", orgs["data"])
    mems = (await api.get("/organization_memberships", params={"limit": 100})).json()
    assert_valid("OrganizationMemberships", [mems], specs=(BAPI,))
    assert_valid("OrganizationMembership", mems["data"])


async def test_sessions_invitations_instance_validate(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    sessions: list[dict[str, Any]] = []
    for uid in inst.user_ids()[:40]:
        sessions += (await api.get("/sessions", params={"user_id": uid})).json()
    new = inst.sign_in(inst.user_ids()[0])
    sessions.append(inst.set_session_status(new["id"], "ended"))
    assert {s["status"] for s in sessions} >= {"active", "ended"}
    assert_valid("Session", sessions)
    invitations = (await api.get("/invitations", params={"limit": 500})).json()
    invitations += (await api.get("/invitations", params={"status": "revoked"})).json()
    assert_valid("Invitation", invitations, specs=(BAPI,))
    assert_valid("Instance", [(await api.get("/instance")).json()], specs=(BAPI,))
    assert_valid("TotalCount", [(await api.get("/users/count")).json()], specs=(BAPI,))


async def test_errors_validate(api: httpx.AsyncClient):
    body = (await api.get("/users", params={"limit": 0})).json()
    assert_valid("ClerkErrors", [body], specs=(BAPI,))
