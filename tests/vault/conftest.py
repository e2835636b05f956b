"""Fixtures for the vault and tenant-store tests: keys, keyrings and a fresh SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clerk_sync.store.db import Database, open_database
from clerk_sync.vault import Keyring, MasterKey, SecretKey

LIVE_KEY = "sk_live_" + "Acme7Secret" * 4 + "Zz91"
"""Long and distinctive, so any leak of its body (not just the masked fingerprint) is detectable."""
TEST_KEY = "sk_test_" + "Beta5Hidden" * 4 + "Qq42"
SECRET_BODIES = (LIVE_KEY[8:-4], TEST_KEY[8:-4])


def assert_no_secret(text: str | bytes) -> None:
    """Fail if any part of a test key's body appears in ``text``."""
    data = text.encode() if isinstance(text, str) else text
    for body in SECRET_BODIES:
        assert body.encode() not in data
        assert body[:12].encode() not in data


@pytest.fixture
def live_key() -> SecretKey:
    return SecretKey(LIVE_KEY)


@pytest.fixture
def test_key() -> SecretKey:
    return SecretKey(TEST_KEY)


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def keyring(master: MasterKey) -> Keyring:
    return Keyring(master)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "clerk-sync.db"


@pytest.fixture
def sqlite_db(db_path: Path) -> Iterator[Database]:
    """A SQLite database whose files tests read byte by byte."""
    db_path.parent.mkdir(mode=0o700, exist_ok=True)
    database = open_database(f"sqlite:///{db_path}")
    yield database
    database.dispose()
