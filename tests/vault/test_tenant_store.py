"""TenantStore: encrypted keys bound to rows, quarantine, removal, rotation, and no plaintext at rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlmodel import SQLModel

from clerk_sync.errors import MasterKeyMismatchError, TenantExistsError, TenantNotFoundError
from clerk_sync.store.db import Database
from clerk_sync.store.models import (
    Lease,
    MirrorObject,
    OutboxEvent,
    SinkCursor,
    SyncRun,
    Tenant,
    Watermark,
)
from clerk_sync.store.tenants import InstanceInfo, ServiceKeyStore, TenantStore
from clerk_sync.vault import Keyring, MasterKey, SecretKey
from tests.vault.conftest import assert_no_secret

TENANT = Tenant.__table__  # type: ignore[attr-defined]
PROD = InstanceInfo("ins_prod_acme", "production")
DEV = InstanceInfo("ins_dev_beta", "development")


@pytest.fixture
def store(db: Database) -> TenantStore:
    return TenantStore(db)


def test_create_get_list(
    store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    acme = store.create("acme", live_key, keyring, PROD)
    store.create("beta", test_key, keyring, DEV, api_url="http://127.0.0.1:1/v1")
    assert acme.id is not None and acme.key_status == "ok" and acme.key_fingerprint == live_key.fingerprint
    assert keyring.decrypt_tenant_key(store.get("acme")) == live_key
    assert keyring.decrypt_tenant_key(store.get("beta")) == test_key
    assert [t.name for t in store.list()] == ["acme", "beta"]
    assert store.get("beta").api_url == "http://127.0.0.1:1/v1"
    with pytest.raises(TenantNotFoundError, match="no tenant called 'gamma'"):
        store.get("gamma")


def test_name_taken(store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey) -> None:
    store.create("acme", live_key, keyring, PROD)
    with pytest.raises(TenantExistsError, match="--replace"):
        store.create("acme", test_key, keyring, DEV)


def test_second_tenant_on_same_instance_needs_permission(
    store: TenantStore, keyring: Keyring, live_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    with pytest.raises(TenantExistsError, match="already enrolled as tenant acme"):
        store.create("acme2", live_key, keyring, PROD)
    assert [t.name for t in store.list()] == ["acme"]
    store.create("acme2", live_key, keyring, PROD, allow_shared_instance=True)
    assert [t.name for t in store.on_instance(PROD.instance_id or "")] == ["acme", "acme2"]


def test_active_skips_disabled_rejected_removed_and_unverified(
    store: TenantStore, keyring: Keyring, live_key: SecretKey
) -> None:
    for name in ("ok", "disabled", "rejected", "removed"):
        store.create(name, live_key, keyring, InstanceInfo(f"ins_{name}", "production"))
    store.create("unverified", live_key, keyring, InstanceInfo(None, "production"))
    store.set_enabled("disabled", False)
    store.mark_key_rejected(store.get("rejected").id or 0, "authentication_invalid")
    store.remove("removed")
    assert [t.name for t in store.active()] == ["ok"]
    assert store.get("unverified").key_status == "unverified"
    assert [t.name for t in store.list()] == ["disabled", "ok", "rejected", "unverified"]
    assert "removed" in [t.name for t in store.list(include_removed=True)]


def test_mark_key_rejected_then_replace_clears_it(
    store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    tenant = store.create("acme", live_key, keyring, PROD)
    assert tenant.id is not None
    store.mark_key_rejected(tenant.id, "authentication_invalid")
    rejected = store.get("acme")
    assert (rejected.key_status, rejected.key_error) == ("key_rejected", "authentication_invalid")
    assert rejected.key_rejected_ms and rejected.key_rejected_ms > 0
    new_key = SecretKey("sk_live_" + "Rotated" * 5)
    replaced = store.replace_key("acme", new_key, keyring, PROD)
    assert (replaced.key_status, replaced.key_error, replaced.key_rejected_ms) == ("ok", None, None)
    assert keyring.decrypt_tenant_key(replaced) == new_key
    assert replaced.key_fingerprint == new_key.fingerprint
    assert [t.name for t in store.active()] == ["acme"]


def test_replace_with_key_of_another_instance_is_refused(
    store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    with pytest.raises(TenantExistsError, match="enroll it as a new tenant"):
        store.replace_key("acme", test_key, keyring, DEV)
    assert keyring.decrypt_tenant_key(store.get("acme")) == live_key


def test_remove_deletes_the_key_and_keeps_data(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey
) -> None:
    tenant = store.create("acme", live_key, keyring, PROD)
    _add_data(db, tenant.id or 0)
    store.remove("acme")
    removed = store.get("acme")
    assert (removed.key_status, removed.enabled, removed.key_ciphertext) == ("removed", False, None)
    assert set(_data_counts(db, tenant.id or 0).values()) == {1}  # every row kept
    with pytest.raises(TenantExistsError, match="--purge"):
        store.create("acme", live_key, keyring, PROD)
    # the instance is free again for another tenant, and the old name can be re-enrolled
    again = store.replace_key("acme", live_key, keyring, PROD)
    assert (again.key_status, again.enabled) == ("ok", True)


def test_purge_deletes_everything_of_that_tenant_only(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    acme = store.create("acme", live_key, keyring, PROD)
    beta = store.create("beta", test_key, keyring, DEV)
    _add_data(db, acme.id or 0)
    _add_data(db, beta.id or 0)
    counts = store.remove("acme", purge=True)
    assert counts["tenant"] == 1 and counts["mirror"] == 1 and counts["lease"] == 1
    assert _data_counts(db, acme.id or 0) == dict.fromkeys(counts.keys() - {"tenant"}, 0)
    assert set(_data_counts(db, beta.id or 0).values()) == {1}
    assert [t.name for t in store.list(include_removed=True)] == ["beta"]


def test_last_runs(db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey) -> None:
    tenant = store.create("acme", live_key, keyring, PROD)
    run = SyncRun.__table__  # type: ignore[attr-defined]
    with db.transaction() as conn:
        conn.execute(
            insert(run).values(
                tenant_id=tenant.id, resource="users", mode="full", started_ms=1, finished_ms=2, status="ok"
            )
        )
        conn.execute(
            insert(run).values(
                tenant_id=tenant.id,
                resource="sessions",
                mode="incremental",
                started_ms=3,
                status="failed",
                error="boom",
            )
        )
    last = store.last_runs()[tenant.id or 0]
    assert (last.resource, last.status, last.error) == ("sessions", "failed", "boom")


def test_plaintext_key_is_nowhere_in_the_database_files(
    sqlite_db: Database, db_path: Path, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    db = sqlite_db
    store = TenantStore(db)
    store.create("acme", live_key, keyring, PROD)
    store.create("beta", test_key, keyring, DEV)
    store.replace_key("beta", test_key, keyring, DEV)
    ServiceKeyStore(db).get_or_create(keyring)
    store.rotate(keyring, MasterKey.generate())
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert any(p.name.endswith("-wal") for p in files)  # WAL content is checked too, not just the main file
    for path in files:
        assert_no_secret(path.read_bytes())
    db.dispose()
    assert_no_secret(db_path.read_bytes())


def test_rotation_re_encrypts_everything_under_the_new_key_alone(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    store.create("beta", test_key, keyring, DEV)
    services = ServiceKeyStore(db)
    service, _ = services.get_or_create(keyring)
    private_before = keyring.decrypt_service_private(service).private_bytes_raw()
    new = MasterKey.generate()
    assert store.rotate(keyring, new) == {"tenants": 2, "service_keys": 1}
    only_new = Keyring(new)
    assert only_new.decrypt_tenant_key(store.get("acme")) == live_key
    assert only_new.decrypt_tenant_key(store.get("beta")) == test_key
    rotated = services.current()
    assert rotated is not None and rotated.key_id == new.key_id
    assert only_new.decrypt_service_private(rotated).private_bytes_raw() == private_before
    with pytest.raises(MasterKeyMismatchError):
        Keyring(keyring.primary).decrypt_tenant_key(store.get("acme"))


def test_crash_halfway_through_rotation_leaves_everything_under_the_old_key(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    store.create("beta", test_key, keyring, DEV)
    ServiceKeyStore(db).get_or_create(keyring)
    seen: list[str] = []

    def crash(label: str) -> None:
        seen.append(label)
        if len(seen) == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        store.rotate(keyring, MasterKey.generate(), after_row=crash)
    assert seen == ["tenant acme", "tenant beta"]
    only_old = Keyring(keyring.primary)
    assert only_old.decrypt_tenant_key(store.get("acme")) == live_key
    assert only_old.decrypt_tenant_key(store.get("beta")) == test_key
    service = ServiceKeyStore(db).current()
    assert service is not None
    only_old.decrypt_service_private(service)


def test_rotation_aborts_if_any_tenant_does_not_decrypt(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    stranger = Keyring(MasterKey.generate())
    store.create("beta", test_key, stranger, DEV)
    with pytest.raises(MasterKeyMismatchError, match="tenant beta"):
        store.rotate(keyring, MasterKey.generate())
    assert keyring.decrypt_tenant_key(store.get("acme")) == live_key


def test_ciphertext_copied_onto_another_row_does_not_decrypt(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey, test_key: SecretKey
) -> None:
    acme = store.create("acme", live_key, keyring, PROD)
    store.create("beta", test_key, keyring, DEV)
    with db.transaction() as conn:
        conn.execute(
            update(TENANT)
            .where(TENANT.c.name == "beta")
            .values(key_ciphertext=acme.key_ciphertext, key_id=acme.key_id)
        )
    with pytest.raises(MasterKeyMismatchError, match="tenant beta"):
        keyring.decrypt_tenant_key(store.get("beta"))


def test_rename_keeps_the_key_readable(
    db: Database, store: TenantStore, keyring: Keyring, live_key: SecretKey
) -> None:
    store.create("acme", live_key, keyring, PROD)
    with db.transaction() as conn:
        conn.execute(update(TENANT).where(TENANT.c.name == "acme").values(name="acme-corp"))
    assert keyring.decrypt_tenant_key(store.get("acme-corp")) == live_key


def test_service_key_is_created_once_and_bound_to_its_row(db: Database, keyring: Keyring) -> None:
    services = ServiceKeyStore(db)
    assert services.current() is None
    first, created = services.get_or_create(keyring)
    again, created_again = services.get_or_create(keyring)
    assert created and not created_again and first.public_key == again.public_key
    private = keyring.decrypt_service_private(first)
    from cryptography.hazmat.primitives import serialization

    assert (
        private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        == first.public_key
    )
    moved = first.model_copy(update={"id": (first.id or 0) + 1})
    with pytest.raises(MasterKeyMismatchError, match="service key"):
        keyring.decrypt_service_private(moved)


def _add_data(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        conn.execute(
            insert(MirrorObject.__table__).values(  # type: ignore[attr-defined]
                tenant_id=tenant_id,
                resource="users",
                object_id="user_1",
                data="{}",
                content_hash="h",
                version=1,
                first_seen_ms=1,
                last_seen_ms=1,
                seen_pass=0,
            )
        )
        conn.execute(
            insert(OutboxEvent.__table__).values(  # type: ignore[attr-defined]
                tenant_id=tenant_id,
                sequence=1,
                event_id=f"evt_{tenant_id}",
                type="user.created",
                resource="users",
                object_id="user_1",
                created_ms=1,
                payload="{}",
            )
        )
        conn.execute(
            insert(Watermark.__table__).values(
                tenant_id=tenant_id, resource="users", name="updated_at", value="1"
            )
        )  # type: ignore[attr-defined]
        conn.execute(
            insert(SyncRun.__table__).values(
                tenant_id=tenant_id, resource="users", mode="full", started_ms=1, status="ok"
            )
        )  # type: ignore[attr-defined]
        conn.execute(
            insert(SinkCursor.__table__).values(
                sink="s", tenant_id=tenant_id, sequence=1, attempts=0, next_attempt_ms=0
            )
        )  # type: ignore[attr-defined]
        conn.execute(
            insert(Lease.__table__).values(scope=f"tenant:{tenant_id}", owner="me", lease_until_ms=1)
        )  # type: ignore[attr-defined]
        conn.execute(
            insert(SQLModel.metadata.tables["mirror_seen"]).values(
                tenant_id=tenant_id, resource="users", pass_id=1, object_id="user_1"
            )
        )
        conn.execute(
            insert(SQLModel.metadata.tables["session_check"]).values(
                tenant_id=tenant_id, user_id="user_1", open_sessions=0
            )
        )


def _data_counts(db: Database, tenant_id: int) -> dict[str, int]:
    counts = {}
    with db.read() as conn:
        for table in SQLModel.metadata.sorted_tables:  # every table keyed by tenant
            if "tenant_id" in table.c:
                counts[table.name] = len(
                    conn.execute(select(table).where(table.c.tenant_id == tenant_id)).all()
                )
        lease = Lease.__table__  # type: ignore[attr-defined]
        counts["lease"] = len(conn.execute(select(lease).where(lease.c.scope == f"tenant:{tenant_id}")).all())
    return counts
