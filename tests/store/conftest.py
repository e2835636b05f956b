"""Store fixtures: an open, migrated database with one tenant row."""

from __future__ import annotations

import pytest

from clerk_sync.store.db import Database
from tests.factories import add_tenant


@pytest.fixture
def tenant_id(db: Database) -> int:
    return add_tenant(db, "acme")
