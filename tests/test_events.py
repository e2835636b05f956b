"""Events: ids, types, deleted payloads, and validation against Clerk's webhook schemas."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from clerk_sync import events as ev
from clerk_sync.resources import INVITATIONS, ORGANIZATION_MEMBERSHIPS, ORGANIZATIONS, USERS, Resource
from clerk_sync.simulator import SimulatedClerk
from tests import webhook_schemas


def test_event_ids_are_deterministic_and_never_repeat_across_versions() -> None:
    a = ev.event_id(1, "users", "u1", "user.updated", 2, "h1")
    assert a == ev.event_id(1, "users", "u1", "user.updated", 2, "h1")
    assert a.startswith("evt_")
    others = {
        ev.event_id(1, "users", "u1", "user.updated", 3, "h1"),  # same content again later (A->B->A)
        ev.event_id(2, "users", "u1", "user.updated", 2, "h1"),
        ev.event_id(1, "users", "u1", "user.deleted", 2, "h1"),
        ev.event_id(1, "users", "u1", "user.updated", 2, "h2"),
    }
    assert a not in others and len(others) == 4


@pytest.mark.parametrize(
    ("kind", "old", "new", "extension", "expected"),
    [
        ("created", None, {"status": "pending"}, True, ["invitation.created"]),
        ("created", None, {"status": "accepted"}, True, ["invitation.created", "invitation.accepted"]),
        ("updated", {"status": "pending"}, {"status": "revoked"}, True, ["invitation.revoked"]),
        ("updated", {"status": "pending"}, {"status": "expired"}, True, ["invitation.expired"]),
        ("updated", {"status": "pending", "x": 1}, {"status": "pending", "x": 2}, True, []),
        ("deleted", {"status": "pending"}, None, True, []),
        ("created", None, {"status": "pending"}, False, []),
    ],
)
def test_invitation_types_follow_status_transitions(
    kind: ev.Kind,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    extension: bool,
    expected: list[str],
) -> None:
    assert ev.event_types(INVITATIONS, kind, old, new, extension_types=extension) == expected


def test_clerk_resources_map_to_clerk_types() -> None:
    got = [
        t
        for r, k in itertools.product(
            (USERS, ORGANIZATIONS, ORGANIZATION_MEMBERSHIPS), ("created", "updated", "deleted")
        )
        for t in ev.event_types(r, k, {}, {})  # type: ignore[arg-type]
    ]
    assert got == list(ev.CLERK_TYPES)


def test_deleted_object_keeps_only_what_clerk_sends() -> None:
    user = {"id": "user_1", "object": "user", "external_id": "ext-9", "first_name": "A"}
    org = {"id": "org_1", "object": "organization", "slug": "acme", "name": "Acme"}
    assert ev.deleted_data(USERS, user, "user_1") == {
        "object": "user",
        "id": "user_1",
        "deleted": True,
        "external_id": "ext-9",
    }
    assert ev.deleted_data(ORGANIZATIONS, org, "org_1") == {
        "object": "organization",
        "id": "org_1",
        "deleted": True,
        "slug": "acme",
    }
    membership = {"id": "orgmem_1", "object": "organization_membership"}
    assert ev.deleted_data(ORGANIZATION_MEMBERSHIPS, membership, "orgmem_1") == membership


def _sample(resource: Resource) -> dict[str, Any]:
    sim = SimulatedClerk(seed=3, users=5, orgs=2)
    inst = sim.instance("sk_live_schema")
    if resource is USERS:
        return inst.get_user(inst.user_ids()[0])  # type: ignore[return-value]
    if resource is ORGANIZATIONS:
        return inst.update_org(inst.org_ids()[0], name="Renamed")
    user = inst.create_user(first_name="Member")
    return inst.add_membership(inst.org_ids()[0], user["id"], role="org:admin")


def _envelope(resource: Resource, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return ev.build(
        tenant_id=1,
        tenant_name="acme",
        instance_id="ins_2abc",
        resource=resource,
        type_=type_,
        object_id=data["id"],
        data=data,
        version=1,
        content_hash="h",
        detected_ms=1_700_000_000_000,
        changed=["first_name"],
        previous={"first_name": "Old"},
    ).envelope


@pytest.mark.parametrize("type_", ev.CLERK_TYPES)
def test_every_clerk_type_validates_against_clerks_webhook_schema(type_: str) -> None:
    resource = {
        "user": USERS,
        "organization": ORGANIZATIONS,
        "organizationMembership": ORGANIZATION_MEMBERSHIPS,
    }[type_.split(".")[0]]
    obj = _sample(resource)
    data = ev.deleted_data(resource, obj, obj["id"]) if type_.endswith(".deleted") else obj
    event = _envelope(resource, type_, data)
    assert type_ in webhook_schemas.webhook_types()
    webhook_schemas.validate(event)
    assert event["clerk_sync"]["event_id"].startswith("evt_")
    assert event["timestamp"] == 1_700_000_000_000


def test_the_validator_rejects_a_wrong_payload() -> None:
    import jsonschema

    event = _envelope(USERS, "user.created", {"id": "user_1", "object": "user"})
    with pytest.raises(jsonschema.ValidationError):
        webhook_schemas.validate(event)
