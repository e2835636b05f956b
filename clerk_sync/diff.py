"""Pure: canonical form and content hash of Clerk objects, and (stored, fetched) -> changes.

The hash covers the canonical JSON (sorted keys) of the object without the resource's volatile
fields, so activity alone (``last_active_at``, ``updated_at`` …) never looks like a change. The
stored ``data`` is the canonical JSON of the whole object, so "nothing at all moved" is a string
comparison and needs no parsing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from clerk_sync.resources import Resource

_SORT = orjson.OPT_SORT_KEYS


def _membership_projection(obj: dict[str, Any]) -> dict[str, Any]:
    # The embedded organization and user summaries change whenever the org or the user does
    # (members_count moves on every join); a membership changes only by its own fields.
    out = dict(obj)
    org = obj.get("organization")
    if isinstance(org, dict):
        out["organization"] = {"id": org.get("id")}
    pud = obj.get("public_user_data")
    if isinstance(pud, dict):
        out["public_user_data"] = {"user_id": pud.get("user_id")}
    return out


_PROJECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "organization_memberships": _membership_projection,
}
"""Per-resource reduction before hashing, for nested volatile data."""


def parent_of(resource: Resource, obj: dict[str, Any]) -> str | None:
    """The parent id kept in the mirror: organization of a membership, user of a session."""
    if resource.name == "organization_memberships":
        org = obj.get("organization")
        if isinstance(org, dict) and isinstance(org.get("id"), str):
            return str(org["id"])
        return None
    if resource.name == "sessions":
        uid = obj.get("user_id")
        return uid if isinstance(uid, str) else None
    return None


def hashed_view(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object that counts as its content."""
    projection = _PROJECTIONS.get(resource.name)
    if not resource.volatile_fields:
        return projection(obj) if projection else obj
    view = projection(obj) if projection else dict(obj)  # a copy either way: popped below
    for name in resource.volatile_fields:
        view.pop(name, None)
    return view


def content_hash(resource: Resource, obj: dict[str, Any]) -> str:
    """Hash of the canonical JSON of the object's content (volatile fields left out)."""
    return hashlib.blake2b(orjson.dumps(hashed_view(resource, obj), option=_SORT), digest_size=16).hexdigest()


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Fetched:
    """A fetched object in canonical form, ready to compare and store.

    ``content_hash`` is computed on first use: an object byte-identical to its mirror row (the
    common case of a resync) is never hashed.
    """

    __slots__ = (
        "_hash",
        "created_at_ms",
        "data",
        "obj",
        "object_id",
        "parent_id",
        "resource",
        "updated_at_ms",
    )

    def __init__(self, resource: Resource, object_id: str, obj: dict[str, Any]) -> None:
        self.resource = resource
        self.object_id = object_id
        self.obj = obj
        self.data: str = orjson.dumps(obj, option=_SORT).decode()
        self.created_at_ms = _int_or_none(obj.get("created_at"))
        self.updated_at_ms = _int_or_none(obj.get("updated_at"))
        self.parent_id = parent_of(resource, obj)
        self._hash: str | None = None

    @property
    def content_hash(self) -> str:
        """Hash of the object's content (volatile fields left out)."""
        if self._hash is None:
            self._hash = content_hash(self.resource, self.obj)
        return self._hash

    def __repr__(self) -> str:
        return f"Fetched({self.resource.name}, {self.object_id})"


def prepare(resource: Resource, obj: dict[str, Any]) -> Fetched:
    """Canonicalise one fetched object (raises ValueError if it has no string id)."""
    oid = obj.get("id")
    if not isinstance(oid, str) or not oid:
        raise ValueError(f"a {resource.object_type} without an id")
    return Fetched(resource, oid, obj)


class Known(Protocol):
    """What the differ reads of a mirror row."""

    @property
    def data(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def deleted_ms(self) -> int | None: ...


@dataclass
class PageDiff:
    """A page sorted by what happened to each object."""

    created: list[Fetched] = field(default_factory=list)
    """New ids, or ids whose tombstone is contradicted (seen alive again)."""
    updated: list[tuple[Fetched, Known]] = field(default_factory=list)
    """Content changed."""
    refreshed: list[Fetched] = field(default_factory=list)
    """Only volatile fields moved: rewrite the row, no event."""
    unchanged: list[str] = field(default_factory=list)
    """Byte-identical to the mirror."""


def diff_page(fetched: Sequence[Fetched], known: dict[str, Any]) -> PageDiff:
    """Compare fetched objects with their mirror rows (``known`` maps id -> row)."""
    out = PageDiff()
    seen: set[str] = set()
    for f in fetched:
        if f.object_id in seen:  # offset paging can serve an object twice
            continue
        seen.add(f.object_id)
        k = known.get(f.object_id)
        if k is None or k.deleted_ms is not None:
            out.created.append(f)
        elif k.data == f.data:
            out.unchanged.append(f.object_id)
        elif k.content_hash != f.content_hash:
            out.updated.append((f, k))
        else:
            out.refreshed.append(f)
    return out


def changed_fields(
    resource: Resource, old: dict[str, Any], new: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """Top-level content fields that differ, and their old values."""
    a = hashed_view(resource, old)
    b = hashed_view(resource, new)
    names = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return names, {k: old.get(k) for k in names}
