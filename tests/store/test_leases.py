"""Leases: one owner at a time, re-entrant for the owner, free again on expiry or release."""

from __future__ import annotations

import time

from clerk_sync.store import leases
from clerk_sync.store.db import Database


def test_one_owner_at_a_time(db: Database) -> None:
    assert leases.acquire(db, "tenant:1", "a", 60)
    assert leases.acquire(db, "tenant:1", "a", 60)  # re-entrant
    assert not leases.acquire(db, "tenant:1", "b", 60)
    assert leases.renew(db, "tenant:1", "a", 60)
    assert not leases.renew(db, "tenant:1", "b", 60)
    leases.release(db, "tenant:1", "b")  # not b's: no effect
    assert leases.holder(db, "tenant:1") is not None
    leases.release(db, "tenant:1", "a")
    assert leases.holder(db, "tenant:1") is None
    assert leases.acquire(db, "tenant:1", "b", 60)


def test_an_expired_lease_can_be_taken(db: Database) -> None:
    assert leases.acquire(db, "tenant:2", "a", 0.001)
    time.sleep(0.01)
    assert leases.acquire(db, "tenant:2", "b", 60)
    assert not leases.renew(db, "tenant:2", "a", 60)
