"""Enrollment against the simulator: verify keys, record instances, quarantine rejected keys."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from clerk_sync.clerk.budget import InstanceBudget
from clerk_sync.clerk.client import ClerkClient, ClientOptions
from clerk_sync.config import ClerkSettings, Settings
from clerk_sync.enrollment import EnrollOptions, enroll, verify_tenant
from clerk_sync.errors import ClerkError, KeyRejectedError, TenantExistsError
from clerk_sync.simulator import SimulatedClerk
from clerk_sync.store.db import Database
from clerk_sync.store.tenants import TenantStore
from clerk_sync.vault import Keyring, SecretKey
from tests.vault.conftest import LIVE_KEY, TEST_KEY, assert_no_secret

API_URL = "http://clerk.sim/v1"


@pytest.fixture
def sim() -> SimulatedClerk:
    return SimulatedClerk(seed=3, users=5, orgs=1)


@pytest.fixture
def transport(sim: SimulatedClerk) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=sim.app)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", clerk=ClerkSettings(api_url=API_URL))


def _enroll(
    settings: Settings,
    db: Database,
    keyring: Keyring,
    name: str,
    key: str,
    transport: httpx.AsyncBaseTransport,
    **options: bool,
) -> object:
    return enroll(settings, db, keyring, name, SecretKey(key), EnrollOptions(**options), transport=transport)


def test_enroll_records_instance_and_environment(
    sim: SimulatedClerk, settings: Settings, db: Database, keyring: Keyring, transport: httpx.ASGITransport
) -> None:
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    _enroll(settings, db, keyring, "acme-dev", "sk_test_" + LIVE_KEY[8:], transport)
    store = TenantStore(db)
    prod, dev = store.get("acme"), store.get("acme-dev")
    assert (prod.instance_id, prod.environment) == (sim.instance(LIVE_KEY).instance_id, "production")
    assert (dev.instance_id, dev.environment) == (
        sim.instance("sk_test_" + LIVE_KEY[8:]).instance_id,
        "development",
    )
    assert prod.instance_id != dev.instance_id
    assert [t.name for t in store.active()] == ["acme", "acme-dev"]
    assert keyring.decrypt_tenant_key(prod) == SecretKey(LIVE_KEY)
    assert sim.stats()["non_get"] == 0


def test_second_tenant_on_an_enrolled_instance(
    settings: Settings, db: Database, keyring: Keyring, transport: httpx.ASGITransport
) -> None:
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    with pytest.raises(TenantExistsError, match="--allow-shared-instance"):
        _enroll(settings, db, keyring, "acme-again", LIVE_KEY, transport)
    _enroll(settings, db, keyring, "acme-again", LIVE_KEY, transport, allow_shared_instance=True)
    assert len(TenantStore(db).list()) == 2


def test_rejected_key_is_not_enrolled(
    settings: Settings, db: Database, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimulatedClerk(seed=3, users=5, orgs=1, instances=["acme"])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(KeyRejectedError) as info:
        _enroll(settings, db, keyring, "stranger", LIVE_KEY, httpx.ASGITransport(app=sim.app))
    assert str(info.value).startswith("cannot enroll stranger:")
    assert_no_secret(str(info.value))
    assert_no_secret(caplog.text)
    assert TenantStore(db).list() == []


def test_clerk_outage_fails_cleanly_without_leaking(
    sim: SimulatedClerk,
    settings: Settings,
    db: Database,
    keyring: Keyring,
    transport: httpx.ASGITransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.inject("invalid_json", count=10)
    settings = settings.replace(http=settings.http.__class__(retry_attempts=1))
    with pytest.raises(ClerkError) as info:
        _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    assert "--no-verify" in str(info.value)
    assert_no_secret(str(info.value))
    assert_no_secret(caplog.text)
    assert TenantStore(db).list() == []


def test_revoked_key_quarantines_only_that_tenant_until_replaced(
    sim: SimulatedClerk, settings: Settings, db: Database, keyring: Keyring, transport: httpx.ASGITransport
) -> None:
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    _enroll(settings, db, keyring, "beta", TEST_KEY, transport)
    store = TenantStore(db)
    sim.instance(LIVE_KEY).revoke_key()

    # What the sync engine does on a 401: the client raises, the store quarantines.
    acme = store.get("acme")
    assert acme.id is not None

    async def call() -> None:
        budget = InstanceBudget(1000, 1.0)
        async with ClerkClient(
            keyring.decrypt_tenant_key(acme), API_URL, budget, ClientOptions(), transport
        ) as c:
            await c.get_instance()

    with pytest.raises(KeyRejectedError) as info:
        asyncio.run(call())
    store.mark_key_rejected(acme.id, info.value.code)
    quarantined = store.get("acme")
    assert quarantined.key_status == "key_rejected" and quarantined.key_error
    assert [t.name for t in store.active()] == ["beta"]

    # The customer rotates the key in Clerk; the operator re-enrolls it.
    sim.instance(LIVE_KEY).restore_key()
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport, replace=True)
    assert (store.get("acme").key_status, store.get("acme").key_error) == ("ok", None)
    assert [t.name for t in store.active()] == ["acme", "beta"]


def test_verify_tenant_quarantines_a_revoked_key(
    sim: SimulatedClerk, settings: Settings, db: Database, keyring: Keyring, transport: httpx.ASGITransport
) -> None:
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    sim.instance(LIVE_KEY).revoke_key()
    with pytest.raises(KeyRejectedError):
        verify_tenant(settings, db, keyring, "acme", transport=transport)
    assert TenantStore(db).get("acme").key_status == "key_rejected"


def test_unverified_enrollment_then_verify(
    sim: SimulatedClerk, settings: Settings, db: Database, keyring: Keyring, transport: httpx.ASGITransport
) -> None:
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport, verify=False)
    store = TenantStore(db)
    assert (store.get("acme").key_status, store.get("acme").instance_id) == ("unverified", None)
    assert store.active() == []
    assert sim.stats()["admitted"] == 0
    verified = verify_tenant(settings, db, keyring, "acme", transport=transport)
    assert (verified.key_status, verified.instance_id) == ("ok", sim.instance(LIVE_KEY).instance_id)


def test_nothing_secret_in_logs_at_debug(
    sim: SimulatedClerk,
    settings: Settings,
    db: Database,
    keyring: Keyring,
    transport: httpx.ASGITransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport)
    _enroll(settings, db, keyring, "acme", LIVE_KEY, transport, replace=True)
    sim.instance(LIVE_KEY).revoke_key()
    with pytest.raises(KeyRejectedError):
        verify_tenant(settings, db, keyring, "acme", transport=transport)
    assert any(r.getMessage() == "tenant.enrolled" for r in caplog.records)
    assert_no_secret(caplog.text)
    for record in caplog.records:
        assert_no_secret(repr(record.__dict__))


@pytest.mark.parametrize("name", ["", "a b", "x/y", "semi;colon", "-x", "--purge", ".hidden"])
def test_tenant_names_are_plain(settings: Settings, db: Database, keyring: Keyring, name: str) -> None:
    from clerk_sync.errors import TenantError

    with pytest.raises(TenantError, match="tenant names"):
        enroll(settings, db, keyring, name, SecretKey(LIVE_KEY), EnrollOptions(verify=False))
