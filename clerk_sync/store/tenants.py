"""Tenant rows and the service key pair: the only SQL that touches encrypted keys.

A tenant's key is encrypted with associated data bound to its row id, so a new tenant is
inserted first (to get its id) and its ciphertext written in the same transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from clerk_sync.errors import TenantExistsError, TenantNotFoundError
from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import ServiceKey, SyncRun, Tenant
from clerk_sync.vault import Keyring, MasterKey, SecretKey, generate_service_keypair

TENANT = Tenant.__table__  # type: ignore[attr-defined]
SERVICE_KEY = ServiceKey.__table__  # type: ignore[attr-defined]
SYNC_RUN = SyncRun.__table__  # type: ignore[attr-defined]

KEY_OK = "ok"
KEY_UNVERIFIED = "unverified"
KEY_REJECTED = "key_rejected"
KEY_REMOVED = "removed"


@dataclass(frozen=True)
class InstanceInfo:
    """What enrollment learnt about a key's Clerk instance (instance id is None when unverified)."""

    instance_id: str | None
    environment: str


@dataclass(frozen=True)
class LastRun:
    """The latest sync_run of a tenant."""

    resource: str
    status: str
    started_ms: int
    finished_ms: int | None
    error: str | None


def _tenant(row: Any) -> Tenant:
    return Tenant.model_validate(dict(row._mapping))


class TenantStore:
    """Create, read and change tenants; encrypts through the keyring it is given."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # reads

    def get(self, name: str, *, conn: Connection | None = None) -> Tenant:
        """The tenant called ``name`` (removed ones included); TenantNotFoundError otherwise."""
        if conn is None:
            with self.db.read() as c:
                return self.get(name, conn=c)
        row = conn.execute(select(TENANT).where(TENANT.c.name == name)).first()
        if row is None:
            raise TenantNotFoundError(f"no tenant called {name!r} (see `clerk-sync tenants list`)")
        return _tenant(row)

    def get_by_id(self, tenant_id: int) -> Tenant:
        """The tenant with row id ``tenant_id``."""
        with self.db.read() as conn:
            row = conn.execute(select(TENANT).where(TENANT.c.id == tenant_id)).first()
        if row is None:
            raise TenantNotFoundError(f"no tenant with id {tenant_id}")
        return _tenant(row)

    def list(self, include_removed: bool = False) -> builtins.list[Tenant]:
        """Every tenant by name; removed ones only when asked."""
        query = select(TENANT).order_by(TENANT.c.name)
        if not include_removed:
            query = query.where(TENANT.c.key_status != KEY_REMOVED)
        with self.db.read() as conn:
            return [_tenant(r) for r in conn.execute(query)]

    def active(self) -> builtins.list[Tenant]:
        """Tenants to sync: enabled, with a stored key, whose key Clerk has not rejected."""
        query = (
            select(TENANT)
            .where(TENANT.c.enabled.is_(True))
            .where(TENANT.c.key_ciphertext.is_not(None))
            .where(TENANT.c.key_status == KEY_OK)
            .order_by(TENANT.c.name)
        )
        with self.db.read() as conn:
            return [_tenant(r) for r in conn.execute(query)]

    def on_instance(self, instance_id: str) -> builtins.list[Tenant]:
        """Tenants (not removed) enrolled on the Clerk instance ``instance_id``."""
        query = (
            select(TENANT)
            .where(TENANT.c.instance_id == instance_id)
            .where(TENANT.c.key_status != KEY_REMOVED)
            .order_by(TENANT.c.name)
        )
        with self.db.read() as conn:
            return [_tenant(r) for r in conn.execute(query)]

    def last_runs(self) -> dict[int, LastRun]:
        """The most recent sync_run of each tenant, by tenant id."""
        latest = (
            select(SYNC_RUN.c.tenant_id, func.max(SYNC_RUN.c.id).label("id")).group_by(SYNC_RUN.c.tenant_id)
        ).subquery()
        query = select(SYNC_RUN).join(latest, SYNC_RUN.c.id == latest.c.id)
        with self.db.read() as conn:
            return {
                r.tenant_id: LastRun(r.resource, r.status, r.started_ms, r.finished_ms, r.error)
                for r in conn.execute(query)
            }

    # writes

    def create(
        self,
        name: str,
        key: SecretKey,
        keyring: Keyring,
        info: InstanceInfo,
        *,
        api_url: str | None = None,
        allow_shared_instance: bool = False,
    ) -> Tenant:
        """Insert a tenant and its encrypted key in one transaction.

        Refuses a taken name, and a Clerk instance that another tenant already uses unless
        ``allow_shared_instance`` (the two would share one rate budget anyway).
        """
        now = now_ms()
        with self.db.transaction() as conn:
            taken = conn.execute(select(TENANT.c.key_status).where(TENANT.c.name == name)).first()
            if taken is not None:
                hint = (
                    f"it was removed with its data kept; re-enroll it with `clerk-sync enroll {name} --replace` "
                    f"or delete it with `clerk-sync tenants remove {name} --purge`"
                    if taken.key_status == KEY_REMOVED
                    else f"use `clerk-sync enroll {name} --replace` to change its key"
                )
                raise TenantExistsError(f"tenant {name} already exists: {hint}")
            self._check_instance(conn, name, info.instance_id, allow_shared_instance)
            try:
                tenant_id = conn.execute(
                    insert(TENANT).values(
                        name=name,
                        instance_id=info.instance_id,
                        environment=info.environment,
                        api_url=api_url,
                        enabled=True,
                        key_fingerprint=key.fingerprint,
                        key_status=KEY_OK if info.instance_id else KEY_UNVERIFIED,
                        event_seq=0,
                        created_ms=now,
                        updated_ms=now,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            except IntegrityError:
                raise TenantExistsError(f"tenant {name} already exists") from None
            key_id, blob = keyring.encrypt_for_tenant(int(tenant_id), key)
            conn.execute(
                update(TENANT).where(TENANT.c.id == tenant_id).values(key_ciphertext=blob, key_id=key_id)
            )
            return self.get(name, conn=conn)

    def replace_key(
        self,
        name: str,
        key: SecretKey,
        keyring: Keyring,
        info: InstanceInfo,
        *,
        api_url: str | None = None,
        allow_shared_instance: bool = False,
    ) -> Tenant:
        """Swap the key of an existing (possibly removed) tenant; clears a ``key_rejected`` mark.

        A verified key must belong to the tenant's recorded instance: a different instance is a
        different customer dataset and gets its own tenant.
        """
        with self.db.transaction() as conn:
            tenant = self.get(name, conn=conn)
            assert tenant.id is not None
            if info.instance_id and tenant.instance_id and info.instance_id != tenant.instance_id:
                raise TenantExistsError(
                    f"the new key belongs to Clerk instance {info.instance_id}, but tenant {name} mirrors "
                    f"{tenant.instance_id}; enroll it as a new tenant instead"
                )
            if info.instance_id and not tenant.instance_id:
                self._check_instance(conn, name, info.instance_id, allow_shared_instance)
            key_id, blob = keyring.encrypt_for_tenant(tenant.id, key)
            values: dict[str, Any] = {
                "key_ciphertext": blob,
                "key_id": key_id,
                "key_fingerprint": key.fingerprint,
                "key_status": KEY_OK if (info.instance_id or tenant.instance_id) else KEY_UNVERIFIED,
                "key_error": None,
                "key_rejected_ms": None,
                "environment": info.environment,
                "updated_ms": now_ms(),
            }
            if info.instance_id:
                values["instance_id"] = info.instance_id
            if api_url is not None:
                values["api_url"] = api_url
            if tenant.key_status == KEY_REMOVED:
                values["enabled"] = True
            conn.execute(update(TENANT).where(TENANT.c.id == tenant.id).values(**values))
            return self.get(name, conn=conn)

    def record_instance(self, tenant_id: int, info: InstanceInfo) -> None:
        """Mark an unverified tenant verified with its instance id and environment."""
        with self.db.transaction() as conn:
            conn.execute(
                update(TENANT)
                .where(TENANT.c.id == tenant_id)
                .values(
                    instance_id=info.instance_id,
                    environment=info.environment,
                    key_status=KEY_OK,
                    key_error=None,
                    key_rejected_ms=None,
                    updated_ms=now_ms(),
                )
            )

    def set_enabled(self, name: str, enabled: bool) -> Tenant:
        """Enable or disable syncing of a tenant (its key and data stay)."""
        with self.db.transaction() as conn:
            tenant = self.get(name, conn=conn)
            if enabled and tenant.key_status == KEY_REMOVED:
                raise TenantNotFoundError(
                    f"tenant {name} was removed; re-enroll it with `clerk-sync enroll {name} --replace`"
                )
            conn.execute(
                update(TENANT).where(TENANT.c.id == tenant.id).values(enabled=enabled, updated_ms=now_ms())
            )
            return self.get(name, conn=conn)

    def mark_key_rejected(self, tenant_id: int, code: str | None) -> None:
        """Quarantine a tenant whose key Clerk refused (401/403) until ``enroll --replace``."""
        with self.db.transaction() as conn:
            conn.execute(
                update(TENANT)
                .where(TENANT.c.id == tenant_id)
                .where(TENANT.c.key_status != KEY_REMOVED)
                .values(
                    key_status=KEY_REJECTED, key_error=code, key_rejected_ms=now_ms(), updated_ms=now_ms()
                )
            )

    def remove(self, name: str, *, purge: bool = False) -> dict[str, int]:
        """Delete the tenant's key (data kept), or with ``purge`` the tenant and all its data.

        Returns the number of rows deleted per table (purge) or ``{"tenant": 1}``.
        """
        with self.db.transaction() as conn:
            tenant = self.get(name, conn=conn)
            tid = tenant.id
            if not purge:
                conn.execute(
                    update(TENANT)
                    .where(TENANT.c.id == tid)
                    .values(
                        key_ciphertext=None,
                        key_id=None,
                        key_status=KEY_REMOVED,
                        enabled=False,
                        updated_ms=now_ms(),
                    )
                )
                return {"tenant": 1}
            counts: dict[str, int] = {}
            # Every table keyed by tenant, so a table added later is purged too.
            for table in SQLModel.metadata.sorted_tables:
                if "tenant_id" in table.c:
                    counts[table.name] = conn.execute(delete(table).where(table.c.tenant_id == tid)).rowcount
            lease = SQLModel.metadata.tables["lease"]
            counts[lease.name] = conn.execute(delete(lease).where(lease.c.scope == f"tenant:{tid}")).rowcount
            counts["tenant"] = conn.execute(delete(TENANT).where(TENANT.c.id == tid)).rowcount
            return counts

    def rotate(
        self,
        keyring: Keyring,
        new_key: MasterKey,
        *,
        after_row: Callable[[str], None] | None = None,
    ) -> dict[str, int]:
        """Re-encrypt every tenant key and the service private key under ``new_key``, in ONE transaction.

        Every row is decrypted with ``keyring`` first; any failure aborts the whole rotation, so
        the database is either entirely under the old keys or entirely under the new one.
        ``after_row`` is called with a label after each row is rewritten (tests use it to crash
        half-way).
        """
        ring = keyring.with_primary(new_key)
        counts = {"tenants": 0, "service_keys": 0}
        with self.db.transaction() as conn:
            for row in conn.execute(select(TENANT).where(TENANT.c.key_ciphertext.is_not(None))).all():
                tenant = _tenant(row)
                assert tenant.id is not None
                key_id, blob = ring.encrypt_for_tenant(tenant.id, keyring.decrypt_tenant_key(tenant))
                conn.execute(
                    update(TENANT).where(TENANT.c.id == tenant.id).values(key_ciphertext=blob, key_id=key_id)
                )
                counts["tenants"] += 1
                if after_row:
                    after_row(f"tenant {tenant.name}")
            for row in conn.execute(select(SERVICE_KEY)).all():
                service = ServiceKey.model_validate(dict(row._mapping))
                assert service.id is not None
                private = keyring.decrypt_service_private(service)
                raw = private.private_bytes_raw()
                key_id, blob = ring.encrypt_service_private(service.id, raw)
                conn.execute(
                    update(SERVICE_KEY)
                    .where(SERVICE_KEY.c.id == service.id)
                    .values(private_ciphertext=blob, key_id=key_id)
                )
                counts["service_keys"] += 1
                if after_row:
                    after_row(f"service key {service.id}")
        return counts

    def _check_instance(
        self, conn: Connection, name: str, instance_id: str | None, allow_shared_instance: bool
    ) -> None:
        if not instance_id or allow_shared_instance:
            return
        others: Sequence[Any] = conn.execute(
            select(TENANT.c.name)
            .where(TENANT.c.instance_id == instance_id)
            .where(TENANT.c.key_status != KEY_REMOVED)
            .where(TENANT.c.name != name)
        ).all()
        if others:
            raise TenantExistsError(
                f"Clerk instance {instance_id} is already enrolled as tenant {others[0].name}; "
                "pass --allow-shared-instance to enroll it twice (both then share one rate budget)"
            )


class ServiceKeyStore:
    """The service's X25519 key pair for sealed enrollment (one row, created on first use)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def current(self) -> ServiceKey | None:
        """The newest key pair, if one was made."""
        with self.db.read() as conn:
            row = conn.execute(select(SERVICE_KEY).order_by(SERVICE_KEY.c.id.desc())).first()
        return None if row is None else ServiceKey.model_validate(dict(row._mapping))

    def get_or_create(self, keyring: Keyring) -> tuple[ServiceKey, bool]:
        """The key pair, making it (private half encrypted, bound to its row) if there is none."""
        existing = self.current()
        if existing is not None:
            return existing, False
        public_raw, private_raw = generate_service_keypair()
        with self.db.transaction() as conn:
            row = conn.execute(select(SERVICE_KEY).order_by(SERVICE_KEY.c.id.desc())).first()
            if row is not None:  # another process made it meanwhile
                return ServiceKey.model_validate(dict(row._mapping)), False
            row_id = conn.execute(
                insert(SERVICE_KEY).values(
                    public_key=public_raw, private_ciphertext=b"", key_id="", created_ms=now_ms()
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            key_id, blob = keyring.encrypt_service_private(int(row_id), private_raw)
            conn.execute(
                update(SERVICE_KEY)
                .where(SERVICE_KEY.c.id == row_id)
                .values(private_ciphertext=blob, key_id=key_id)
            )
            made = conn.execute(select(SERVICE_KEY).where(SERVICE_KEY.c.id == row_id)).one()
        return ServiceKey.model_validate(dict(made._mapping)), True
