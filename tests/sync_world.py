"""A sync test world: the simulator (in process, over its ASGI app), a database, one or more tenants.

Scenario tests script the simulator, run passes and compare the outbox with the exact events they
expect.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clerk_sync.clerk.budget import BudgetRegistry
from clerk_sync.clerk.client import ClientOptions
from clerk_sync.config import EventsSettings, RateSettings, Settings, SyncSettings
from clerk_sync.resources import resolve
from clerk_sync.simulator import SimulatedClerk
from clerk_sync.simulator.state import InstanceState
from clerk_sync.store import mirror, outbox
from clerk_sync.store.db import Database, open_database
from clerk_sync.store.models import Tenant
from clerk_sync.store.tenants import InstanceInfo, TenantStore
from clerk_sync.sync import PassResult, SyncContext, sync_tenants
from clerk_sync.vault import Keyring, MasterKey, SecretKey

ALL = ["users", "organizations", "organization_memberships", "invitations"]


@dataclass
class World:
    """Simulator + store + context; ``tenants`` by name."""

    sim: SimulatedClerk
    db: Database
    ctx: SyncContext
    tenants: dict[str, Tenant] = field(default_factory=dict)
    cursor: int = 0

    def inst(self, name: str = "acme") -> InstanceState:
        return self.sim.instance(f"sk_live_{name}")

    def add_tenant(self, name: str) -> Tenant:
        inst = self.inst(name)
        tenant = TenantStore(self.db).create(
            name,
            SecretKey(f"sk_live_{name}"),
            self.ctx.keyring,
            InstanceInfo(inst.instance_id, "production"),
            api_url="http://sim.test/v1",
        )
        self.tenants[name] = tenant
        return tenant

    def tenant(self, name: str = "acme") -> Tenant:
        return TenantStore(self.db).get(name)

    async def sync(
        self,
        *names: str,
        resources: list[str] | None = None,
        full: bool = False,
        stop: asyncio.Event | None = None,
    ) -> list[PassResult]:
        tenants = [self.tenant(n) for n in (names or tuple(self.tenants))]
        return await sync_tenants(self.ctx, tenants, resolve(resources or ALL), full=full, stop=stop)

    def all_events(self, name: str = "acme") -> list[dict[str, Any]]:
        tid = self.tenant(name).id
        with self.db.read() as conn:
            return [e.envelope() for _, e in outbox.read(conn, tenant_id=tid, limit=1_000_000)]

    def new_events(self, name: str = "acme") -> list[tuple[str, str]]:
        """(type, object id) of events since the last call, in sequence order."""
        events = self.all_events(name)
        fresh = [e for e in events if e["clerk_sync"]["sequence"] > self.cursor]
        if fresh:
            self.cursor = fresh[-1]["clerk_sync"]["sequence"]
        return [(e["type"], e["data"]["id"]) for e in fresh]

    def live_ids(self, resource: str, name: str = "acme") -> set[str]:
        tid = self.tenant(name).id
        assert tid is not None
        with self.db.read() as conn:
            rows = mirror.live_in_range(conn, tid, resource, -(2**62), 2**62)
            if resource != "users":
                from sqlalchemy import select

                c = mirror.MIRROR.c
                return {
                    r[0]
                    for r in conn.execute(
                        select(c.object_id).where(
                            c.tenant_id == tid, c.resource == resource, c.deleted_ms.is_(None)
                        )
                    )
                }
        return {r.object_id for r in rows}


def make_world(
    db_url: str,
    tmp_path: Path,
    *,
    users: int = 30,
    orgs: int = 4,
    page_size: int = 10,
    initial: str = "none",
    retry_attempts: int = 3,
    tenants: tuple[str, ...] = ("acme",),
) -> World:
    sim = SimulatedClerk(seed=7, users=users, orgs=orgs)
    settings = Settings(state_dir=tmp_path)
    settings = settings.replace(
        sync=dataclasses.replace(SyncSettings(), page_size=page_size, incremental_overlap_s=0.0),
        events=EventsSettings(initial=initial),  # type: ignore[arg-type]
        rate=RateSettings(limit_per_10s=100_000, share=1.0),
    )
    db = open_database(db_url)
    ctx = SyncContext(
        settings=settings,
        db=db,
        keyring=Keyring(MasterKey.generate()),
        budgets=BudgetRegistry(settings.rate),
        transport=httpx.ASGITransport(app=sim.app),
        client_options=ClientOptions.from_settings(
            settings, backoff_scale=0.0, retry_attempts=retry_attempts
        ),
    )
    world = World(sim=sim, db=db, ctx=ctx)
    for name in tenants:
        world.add_tenant(name)
    return world
