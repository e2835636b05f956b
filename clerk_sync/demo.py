"""``clerk-sync demo``: the whole product on one machine, offline, in a few seconds.

A simulated Clerk on loopback, a state dir with a fresh master key (0600), a demo tenant enrolled
through the same code as ``clerk-sync enroll``, a silent baseline sync, then changes made in the
simulator (users created, updated and deleted, an organization, a membership, an invitation) and a
second sync whose events are printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from clerk_sync.clerk.budget import BudgetRegistry
from clerk_sync.config import ClerkSettings, RateSettings, Settings, VaultSettings
from clerk_sync.enrollment import EnrollOptions, enroll
from clerk_sync.resources import ALL
from clerk_sync.simulator import SimulatedClerk, run_simulator
from clerk_sync.store import outbox
from clerk_sync.store.db import open_database
from clerk_sync.store.tenants import TenantStore
from clerk_sync.sync import PassResult, SyncContext, default_handlers, sync_tenants
from clerk_sync.vault import STATE_KEY_FILE, MasterKey, SecretKey, load_keyring, write_master_key_file

DEMO_TENANT = "demo"
DEMO_KEY = "sk_live_demo"
DEMO_LIMIT_PER_10S = 50_000
"""The simulator's key for its production instance ``demo`` (not a real Clerk key)."""


def _settings(state_dir: Path, api_url: str) -> Settings:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = state_dir / STATE_KEY_FILE
    if not key_file.exists():
        write_master_key_file(key_file, MasterKey.generate())
    base = Settings(state_dir=state_dir)
    return base.replace(
        clerk=dataclasses.replace(ClerkSettings(), api_url=api_url),
        vault=VaultSettings(master_key_file=key_file),
        database=dataclasses.replace(base.database, url=f"sqlite:///{state_dir / 'clerk-sync.db'}"),
        rate=RateSettings(share=1.0, limit_per_10s=DEMO_LIMIT_PER_10S),
    )


def _table(echo: Callable[[str], None], results: list[PassResult]) -> None:
    for r in results:
        echo(
            f"  {r.resource:<26} {r.mode:<11} {r.status:<7} requests={r.requests:<4} "
            f"objects={r.objects:<6} events={r.events:<4} {r.seconds:.2f}s"
        )


def run_demo(state_dir: Path, users: int, *, echo: Callable[[str], None] = print) -> int:
    """Run the demo in ``state_dir``; return the exit code."""
    # The demo's own simulator: its rate limit is lifted so the demo takes seconds, not minutes.
    sim = SimulatedClerk(seed=2024, users=users, orgs=max(3, users // 100), limit_per_10s=DEMO_LIMIT_PER_10S)
    with run_simulator(sim) as api_url:
        settings = _settings(state_dir, api_url)
        db = open_database(settings.database_url)
        try:
            keyring = load_keyring(
                settings, env={k: v for k, v in os.environ.items() if not k.startswith("CLERK_SYNC")}
            )
            existing = {t.name for t in TenantStore(db).list(include_removed=True)}
            tenant = enroll(
                settings,
                db,
                keyring,
                DEMO_TENANT,
                SecretKey(DEMO_KEY),
                EnrollOptions(api_url=api_url, replace=DEMO_TENANT in existing),
            )
            echo(f"simulated Clerk at {api_url}; state in {state_dir}")
            echo(
                f"enrolled tenant {tenant.name} (instance {tenant.instance_id}, key {tenant.key_fingerprint})"
            )
            ctx = SyncContext(
                settings, db, keyring, BudgetRegistry(settings.rate), handlers=default_handlers()
            )
            resources = [r for r in ALL if ctx.supports(r)]

            echo("\n1. baseline sync (builds the mirror silently):")
            results = asyncio.run(sync_tenants(ctx, [tenant], resources, full=True))
            _table(echo, results)
            with db.read() as conn:
                last_seq = max(
                    [e.sequence for _, e in outbox.read(conn, tenant_id=tenant.id, limit=1_000_000)] or [0]
                )

            inst = sim.instance(DEMO_KEY)
            ids = inst.user_ids()
            new_users = [inst.create_user(first_name=f"New{i}", last_name="Demo") for i in range(3)]
            inst.update_user(ids[1], first_name="Renamed")
            inst.update_user(ids[2], public_metadata={"plan": "pro"})
            inst.delete_user(ids[3])
            org = inst.create_org(name="Demo Org")
            inst.add_membership(org["id"], new_users[0]["id"], role="org:admin")
            invitation = inst.create_invitation("invitee@example.com")
            inst.sign_in(new_users[1]["id"])
            inst.sign_in(ids[5])
            echo(
                "\n2. changed in Clerk: 3 users created, 2 updated, 1 deleted; "
                f"organization {org['id']} created with a member; invitation {invitation['id']} sent; "
                "2 users signed in"
            )

            echo("\n3. sync again (users incrementally):")
            results2 = asyncio.run(sync_tenants(ctx, [tenant], resources, full=False))
            _table(echo, results2)

            with db.read() as conn:
                events = [
                    e
                    for _, e in outbox.read(conn, tenant_id=tenant.id, after_sequence=last_seq, limit=10_000)
                ]
            echo(f"\n4. {len(events)} change events (Clerk webhook envelopes, in the outbox):")
            for e in events:
                changed = e.envelope()["clerk_sync"]["changed_fields"]
                echo(
                    f"  #{e.sequence:<4} {e.type:<34} {e.object_id}"
                    + (f"  changed: {', '.join(changed)}" if changed else "")
                )
            counts = Counter(e.type for e in events)
            echo("\nsummary: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items())))
            echo(
                "next: `clerk-sync events --json` prints the envelopes; point a config at a real key with "
                "`clerk-sync enroll NAME`"
            )
            ok = all(r.ok for r in results + results2)
            return 0 if ok else 1
        finally:
            db.dispose()
