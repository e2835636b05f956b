"""The synced resources, declared as data: where they live, how they page, what is volatile.

Everything resource-specific that the walker, the differ and the event builder need is here, so
those modules stay generic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Resource:
    """One Clerk list endpoint we mirror."""

    name: str
    """Our name, used in config, the CLI, the mirror and logs (``users``)."""
    path: str
    """Backend API path (``/users``)."""
    object_type: str
    """The ``object`` field of its items (``user``)."""
    event_prefix: str
    """Prefix of its event types (``user`` -> ``user.created``)."""
    paging: Literal["cursor", "offset", "per_user"]
    """``cursor``: starting_after; ``offset``: offset/limit; ``per_user``: listed per user_id."""
    envelope: Literal["array", "data"]
    """``array``: the body is a bare JSON list; ``data``: ``{data: [...], total_count}``."""
    volatile_fields: frozenset[str] = field(default_factory=frozenset)
    """Top-level fields ignored by the content hash: activity, not change."""
    base_params: tuple[tuple[str, str], ...] = ()
    """Query parameters sent on every list request."""
    extra_walks: tuple[tuple[tuple[str, str], ...], ...] = ()
    """Further parameter sets walked in the same pass (e.g. revoked invitations are hidden)."""
    count_path: str | None = None
    """Endpoint returning ``{total_count}`` for the same filters, if any."""
    clerk_events: bool = True
    """False when Clerk has no webhook for this resource (our types are extensions)."""
    depends_on: tuple[str, ...] = ()
    """Resources to sync first in a pass over a tenant."""


USERS = Resource(
    name="users",
    path="/users",
    object_type="user",
    event_prefix="user",
    paging="cursor",
    envelope="array",
    volatile_fields=frozenset({"last_active_at", "last_sign_in_at", "updated_at"}),
    base_params=(("order_by", "+created_at"),),
    count_path="/users/count",
)

ORGANIZATIONS = Resource(
    name="organizations",
    path="/organizations",
    object_type="organization",
    event_prefix="organization",
    paging="offset",
    envelope="data",
    volatile_fields=frozenset({"updated_at", "members_count", "pending_invitations_count"}),
    base_params=(("order_by", "+created_at"),),
)

ORGANIZATION_MEMBERSHIPS = Resource(
    name="organization_memberships",
    path="/organization_memberships",
    object_type="organization_membership",
    event_prefix="organizationMembership",
    paging="offset",
    envelope="data",
    volatile_fields=frozenset({"updated_at"}),
    base_params=(("order_by", "+created_at"),),
    depends_on=("organizations",),
)

INVITATIONS = Resource(
    name="invitations",
    path="/invitations",
    object_type="invitation",
    event_prefix="invitation",
    paging="offset",
    envelope="array",
    volatile_fields=frozenset({"updated_at"}),
    extra_walks=((("status", "revoked"),),),
    clerk_events=False,
)

SESSIONS = Resource(
    name="sessions",
    path="/sessions",
    object_type="session",
    event_prefix="session",
    paging="per_user",
    envelope="array",
    volatile_fields=frozenset({"last_active_at", "latest_activity", "updated_at"}),
    depends_on=("users",),
)

ALL: tuple[Resource, ...] = (USERS, ORGANIZATIONS, ORGANIZATION_MEMBERSHIPS, INVITATIONS, SESSIONS)
BY_NAME: dict[str, Resource] = {r.name: r for r in ALL}


def resolve(names: list[str] | None) -> list[Resource]:
    """Resources by name, in dependency order; all of them for None or an empty list."""
    if not names:
        return list(ALL)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        from clerk_sync.errors import ConfigError

        raise ConfigError(f"unknown resource {unknown[0]!r} (known: {', '.join(BY_NAME)})")
    wanted = set(names)
    return [r for r in ALL if r.name in wanted]
