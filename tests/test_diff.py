"""Differ: canonical hashes ignore volatile fields; pages split into created/updated/refreshed/unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from clerk_sync.diff import changed_fields, content_hash, diff_page, prepare
from clerk_sync.resources import ORGANIZATION_MEMBERSHIPS, USERS


@dataclass
class Row:
    data: str
    content_hash: str
    version: int = 1
    deleted_ms: int | None = None


def stored(obj: dict) -> Row:  # type: ignore[type-arg]
    f = prepare(USERS, obj)
    return Row(f.data, f.content_hash)


def test_hash_ignores_key_order_and_volatile_fields() -> None:
    a = {
        "id": "u1",
        "first_name": "A",
        "last_active_at": 1,
        "updated_at": 5,
        "public_metadata": {"x": 1, "y": 2},
    }
    b = {
        "public_metadata": {"y": 2, "x": 1},
        "updated_at": 9,
        "last_active_at": 7,
        "first_name": "A",
        "id": "u1",
    }
    assert content_hash(USERS, a) == content_hash(USERS, b)
    assert content_hash(USERS, a) != content_hash(USERS, a | {"first_name": "B"})
    assert content_hash(USERS, a) != content_hash(USERS, a | {"public_metadata": {"x": 2, "y": 2}})


def test_membership_hash_ignores_the_embedded_org_and_user_summaries() -> None:
    m = {
        "id": "orgmem_1",
        "role": "org:member",
        "organization": {"id": "org_1", "members_count": 3, "name": "Acme"},
        "public_user_data": {"user_id": "user_1", "first_name": "A"},
    }
    moved = m | {
        "organization": {"id": "org_1", "members_count": 4, "name": "Acme Inc"},
        "public_user_data": {"user_id": "user_1", "first_name": "B"},
    }
    assert content_hash(ORGANIZATION_MEMBERSHIPS, m) == content_hash(ORGANIZATION_MEMBERSHIPS, moved)
    assert content_hash(ORGANIZATION_MEMBERSHIPS, m) != content_hash(
        ORGANIZATION_MEMBERSHIPS, m | {"role": "org:admin"}
    )
    assert prepare(ORGANIZATION_MEMBERSHIPS, m).parent_id == "org_1"


def test_diff_page_sorts_objects() -> None:
    base = {"id": "u1", "first_name": "A", "last_active_at": 1, "created_at": 10, "updated_at": 10}
    known = {
        "u1": stored(base),
        "u2": stored({"id": "u2", "first_name": "B"}),
        "u3": stored({"id": "u3", "first_name": "C"}),
        "u4": Row(stored({"id": "u4"}).data, stored({"id": "u4"}).content_hash, deleted_ms=5),
    }
    page = [
        prepare(USERS, base),  # identical
        prepare(USERS, {"id": "u2", "first_name": "B2"}),  # content change
        prepare(USERS, {"id": "u3", "first_name": "C", "last_active_at": 99}),  # activity only
        prepare(USERS, {"id": "u4"}),  # tombstoned, seen again
        prepare(USERS, {"id": "u5"}),  # new
        prepare(USERS, {"id": "u5"}),  # served twice by a shifting page
    ]
    d = diff_page(page, known)
    assert d.unchanged == ["u1"]
    assert [f.object_id for f, _ in d.updated] == ["u2"]
    assert [f.object_id for f in d.refreshed] == ["u3"]
    assert [f.object_id for f in d.created] == ["u4", "u5"]
    f = prepare(USERS, base)
    assert (f.created_at_ms, f.updated_at_ms) == (10, 10)


def test_changed_fields_and_previous_values() -> None:
    old = {"id": "u1", "first_name": "A", "last_name": "X", "updated_at": 1, "username": None}
    new = {"id": "u1", "first_name": "B", "last_name": "X", "updated_at": 2, "username": "b"}
    assert changed_fields(USERS, old, new) == (
        ["first_name", "username"],
        {"first_name": "A", "username": None},
    )


def test_prepare_rejects_objects_without_id() -> None:
    with pytest.raises(ValueError):
        prepare(USERS, {"object": "user"})
