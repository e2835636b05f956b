"""SQLModel tables. Every timestamp of ours is integer Unix milliseconds (``*_ms``), like Clerk's.

Changing a table means adding a migration step in ``store/db.py``; deployed databases are never
recreated.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Tenant(SQLModel, table=True):
    """A customer's Clerk instance and its encrypted secret key."""

    __tablename__ = "tenant"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    instance_id: str | None = Field(default=None, index=True)
    environment: str | None = None
    """``production`` or ``development`` (sets the rate limit)."""
    api_url: str | None = None
    """Per-tenant override of ``clerk.api_url``."""
    enabled: bool = True
    key_ciphertext: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """nonce || AES-256-GCM ciphertext, associated data bound to this row (see vault.py)."""
    key_id: str | None = None
    """Which master key encrypted ``key_ciphertext``."""
    key_fingerprint: str | None = None
    """Masked form for display, e.g. ``sk_live_…a1b2``."""
    key_status: str = "ok"
    """``ok`` | ``unverified`` | ``key_rejected`` | ``removed``."""
    key_error: str | None = None
    """Clerk's error code when the key was rejected."""
    key_rejected_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    event_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    """Last outbox sequence number used for this tenant."""
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ServiceKey(SQLModel, table=True):
    """The service's X25519 key pair for sealed enrollment; the private half is encrypted."""

    __tablename__ = "service_key"

    id: int | None = Field(default=None, primary_key=True)
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    private_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    key_id: str
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class MirrorObject(SQLModel, table=True):
    """Current state of one Clerk object, or its tombstone."""

    __tablename__ = "mirror"
    __table_args__ = (
        Index("ix_mirror_live_created", "tenant_id", "resource", "deleted_ms", "created_at_ms"),
        Index("ix_mirror_parent", "tenant_id", "resource", "parent_id"),
    )

    tenant_id: int = Field(primary_key=True)
    resource: str = Field(primary_key=True)
    object_id: str = Field(primary_key=True)
    data: str = Field(sa_column=Column(Text, nullable=False))
    """The object's JSON as Clerk returned it."""
    content_hash: str
    """Hash of the canonical JSON without the resource's volatile fields."""
    version: int = 1
    """Bumped on every change; part of event ids so A->B->A->B never repeats an id."""
    created_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    updated_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    parent_id: str | None = None
    """user id of a session, organization id of a membership."""
    first_seen_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seen_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    """When a pass last wrote the row (content or activity moved); unchanged objects are not rewritten."""
    seen_pass: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    """Id of the last full pass that wrote this row; unchanged rows are stamped in ``mirror_seen``."""
    deleted_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """Tombstone: when we concluded the object was deleted."""


class MirrorSeen(SQLModel, table=True):
    """Objects a full pass saw unchanged: small rows, so a resync need not rewrite the mirror.

    Deletion candidates of a pass are the live mirror rows neither stamped (``seen_pass``, set when
    the pass wrote the row) nor listed here; the pass clears its rows when it completes.
    """

    __tablename__ = "mirror_seen"

    tenant_id: int = Field(primary_key=True)
    resource: str = Field(primary_key=True)
    pass_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    object_id: str = Field(primary_key=True)


class SyncRun(SQLModel, table=True):
    """One pass over one (tenant, resource)."""

    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_tenant_resource", "tenant_id", "resource", "started_ms"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(index=True)
    resource: str
    mode: str
    """``full`` | ``incremental``."""
    started_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    finished_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    requests: int = 0
    pages: int = 0
    objects: int = 0
    events: int = 0
    rate_limited: int = 0
    status: str = "running"
    """``running`` | ``ok`` | ``failed`` | ``interrupted``."""
    error: str | None = None
    cursor: str | None = None
    """Resume point of an unfinished full pass (JSON)."""
    pass_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """The full pass this run belongs to: its own id, or the id of the run it resumed."""


class Watermark(SQLModel, table=True):
    """A named high-water mark per (tenant, resource), e.g. the users ``updated_at`` watermark."""

    __tablename__ = "watermark"

    tenant_id: int = Field(primary_key=True)
    resource: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    value: str


class OutboxEvent(SQLModel, table=True):
    """An append-only change event, shaped like Clerk's webhook payload."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("tenant_id", "sequence", name="uq_outbox_tenant_sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(index=True)
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    """Per-tenant, strictly increasing in commit order."""
    event_id: str = Field(unique=True)
    """Deterministic: the same change always yields the same id (idempotency key)."""
    type: str = Field(index=True)
    resource: str
    object_id: str
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))


class SinkCursor(SQLModel, table=True):
    """How far each sink has delivered each tenant's outbox."""

    __tablename__ = "sink_cursor"

    sink: str = Field(primary_key=True)
    tenant_id: int = Field(primary_key=True)
    sequence: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    attempts: int = 0
    next_attempt_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    last_error: str | None = None


class Lease(SQLModel, table=True):
    """Who is working on a scope (``tenant:<id>``) until when; shared by daemon replicas and backfill."""

    __tablename__ = "lease"

    scope: str = Field(primary_key=True)
    owner: str
    lease_until_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class SessionCheck(SQLModel, table=True):
    """Per user: what decides when to list their sessions again (see ``session_policy.py``)."""

    __tablename__ = "session_check"

    tenant_id: int = Field(primary_key=True)
    user_id: str = Field(primary_key=True)
    sign_in_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """Latest ``last_sign_in_at`` known for the user."""
    checked_sign_in_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """``sign_in_ms`` as it was at the last check."""
    checked_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    """When the user's sessions were last listed; null: never."""
    active_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    open_sessions: int = 0
    next_expiry_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class SchemaVersion(SQLModel, table=True):
    """The single row holding the applied migration number."""

    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
