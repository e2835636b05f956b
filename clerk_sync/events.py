"""Pure: turn mirror changes into Clerk-webhook-shaped events with deterministic ids.

The envelope is Clerk's (``data``, ``object: "event"``, ``type``, ``timestamp`` in ms,
``instance_id``) plus one key of ours, ``clerk_sync`` (``event_id``, ``tenant``, ``sequence``,
``detected_at``, ``changed_fields``, ``previous``). ``sequence`` is filled by the outbox when the
event is appended.

Ids hash (tenant, resource, object, type, new version, new content hash): a pass re-run after a
crash derives the same ids (its transaction never committed, so versions did not move), and an
object going A -> B -> A -> B gets a new id each time because the version keeps growing.

``*.deleted`` carries Clerk's ``DeletedObject`` (``object``, ``id``, ``deleted``, plus ``slug`` /
``external_id`` when known), except ``organizationMembership.deleted`` whose Clerk schema is the
full membership: it carries the last known membership. Instance invitations have no Clerk webhook;
their extension types ``invitation.created|accepted|revoked|expired`` follow status transitions.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from clerk_sync.resources import Resource
from clerk_sync.store.outbox import NewEvent

Kind = Literal["created", "updated", "deleted"]

INVITATION_STATUSES = ("accepted", "revoked", "expired")
"""Invitation statuses that have an extension event type."""

CLERK_TYPES: tuple[str, ...] = (
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
)
"""Types we emit that Clerk defines (each validates against Clerk's webhook schema)."""

EXTENSION_TYPES: tuple[str, ...] = tuple(f"invitation.{s}" for s in ("created", *INVITATION_STATUSES))
"""Types of ours, for resources Clerk sends no webhook for (``events.extension_types``)."""


def event_id(
    tenant_id: int, resource: str, object_id: str, type_: str, version: int, content_hash: str
) -> str:
    """Deterministic event id: the same change always gets the same id."""
    raw = f"{tenant_id}\x1f{resource}\x1f{object_id}\x1f{type_}\x1f{version}\x1f{content_hash}".encode()
    return "evt_" + hashlib.blake2b(raw, digest_size=16).hexdigest()


def event_types(
    resource: Resource,
    kind: Kind,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    *,
    extension_types: bool = True,
) -> list[str]:
    """The event types one change produces (possibly none)."""
    if resource.clerk_events:
        return [f"{resource.event_prefix}.{kind}"]
    if not extension_types or resource.name != "invitations":
        return []
    new_status = (new or {}).get("status")
    old_status = (old or {}).get("status")
    if kind == "created":
        types = [f"{resource.event_prefix}.created"]
        if new_status in INVITATION_STATUSES:
            types.append(f"{resource.event_prefix}.{new_status}")
        return types
    if kind == "updated" and new_status != old_status and new_status in INVITATION_STATUSES:
        return [f"{resource.event_prefix}.{new_status}"]
    return []


def deleted_data(resource: Resource, last: dict[str, Any], object_id: str) -> dict[str, Any]:
    """The ``data`` of a ``*.deleted`` event: DeletedObject, or the last membership."""
    if resource.name == "organization_memberships":
        return last
    out: dict[str, Any] = {"object": resource.object_type, "id": object_id, "deleted": True}
    for key in ("slug", "external_id"):
        if isinstance(last.get(key), str):
            out[key] = last[key]
    return out


def build(
    *,
    tenant_id: int,
    tenant_name: str,
    instance_id: str,
    resource: Resource,
    type_: str,
    object_id: str,
    data: dict[str, Any],
    version: int,
    content_hash: str,
    detected_ms: int,
    changed: list[str] | None = None,
    previous: dict[str, Any] | None = None,
) -> NewEvent:
    """One event, ready for the outbox."""
    eid = event_id(tenant_id, resource.name, object_id, type_, version, content_hash)
    meta: dict[str, Any] = {
        "event_id": eid,
        "tenant": tenant_name,
        "sequence": None,
        "detected_at": detected_ms,
        "changed_fields": changed or [],
        "previous": previous or {},
    }
    envelope = {
        "data": data,
        "object": "event",
        "type": type_,
        "timestamp": detected_ms,
        "instance_id": instance_id,
        "clerk_sync": meta,
    }
    return NewEvent(
        event_id=eid,
        type=type_,
        resource=resource.name,
        object_id=object_id,
        envelope=envelope,
        created_ms=detected_ms,
    )
