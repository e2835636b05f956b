"""Sync scenarios against the simulator, each checked against the exact events expected."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import webhook_schemas
from tests.sync_world import World, make_world


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = make_world(db_url, tmp_path)
    yield w
    w.db.dispose()


async def baseline(world: World, *names: str) -> None:
    results = await world.sync(*names, full=True)
    assert all(r.ok for r in results), results
    world.new_events(*names[:1])


async def test_baseline_is_silent_and_mirrors_everything(world: World) -> None:
    results = await world.sync()
    assert [r.status for r in results] == ["ok"] * 4
    assert world.new_events() == []
    inst = world.inst()
    assert world.live_ids("users") == set(inst.user_ids())
    assert world.live_ids("organizations") == set(inst.org_ids())
    assert world.live_ids("organization_memberships") == set(inst.membership_ids())
    again = await world.sync(full=True)
    assert all(r.ok and r.events == 0 for r in again)


async def test_initial_created_emits_every_object(db_url: str, tmp_path: Path) -> None:
    w = make_world(db_url, tmp_path, initial="created")
    try:
        await w.sync(resources=["users", "organizations"])
        counts = Counter(t for t, _ in w.new_events())
        assert counts == {"user.created": 30, "organization.created": 4}
    finally:
        w.db.dispose()


async def test_creates_updates_deletes_give_exact_events(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    ids = inst.user_ids()
    new_user = inst.create_user(first_name="New")
    inst.update_user(ids[3], first_name="Renamed")
    inst.delete_user(ids[5])
    org = inst.create_org(name="Fresh Org")
    inst.update_org(inst.org_ids()[0], name="Renamed Org")
    mem = inst.add_membership(org["id"], ids[7], role="org:admin")
    results = await world.sync(full=True)
    assert all(r.ok for r in results), results
    got = Counter(world.new_events())
    removed_memberships = {m for m in world.live_ids("organization_memberships")}  # after sync
    assert mem["id"] in removed_memberships
    expected = Counter(
        {
            ("user.created", new_user["id"]): 1,
            ("user.updated", ids[3]): 1,
            ("user.deleted", ids[5]): 1,
            ("organization.created", org["id"]): 1,
            ("organization.updated", inst.org_ids()[0]): 1,
            ("organizationMembership.created", mem["id"]): 1,
        }
    )
    # deleting a user also removes its memberships in Clerk
    dropped = [(t, o) for (t, o) in got if t == "organizationMembership.deleted"]
    for key in dropped:
        expected[key] = 1
    assert got == expected
    # every event validates against Clerk's schema and sequences strictly increase
    events = world.all_events()
    seqs = [e["clerk_sync"]["sequence"] for e in events]
    assert seqs == sorted(set(seqs))
    for e in events:
        webhook_schemas.validate_if_available(e)
    updated = next(e for e in events if e["type"] == "user.updated")
    assert updated["clerk_sync"]["changed_fields"] == ["first_name"]
    assert updated["data"]["first_name"] == "Renamed"
    # an idempotent rerun changes nothing
    assert all(r.ok and r.events == 0 for r in await world.sync(full=True))
    assert world.new_events() == []


async def test_user_deleted_removes_its_memberships_with_events(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    mem_ids = set(inst.membership_ids())
    member = next(uid for uid in inst.user_ids() if any(m in mem_ids for m in _memberships_of(world, uid)))
    gone = set(_memberships_of(world, member))
    inst.delete_user(member)
    await world.sync(full=True)
    got = set(world.new_events())
    assert ("user.deleted", member) in got
    assert {o for t, o in got if t == "organizationMembership.deleted"} == gone


def _memberships_of(world: World, user_id: str) -> list[str]:
    import orjson
    from sqlalchemy import select

    from clerk_sync.store.mirror import MIRROR

    c = MIRROR.c
    with world.db.read() as conn:
        rows = conn.execute(select(c.object_id, c.data).where(c.resource == "organization_memberships"))
        return [oid for oid, data in rows if orjson.loads(data)["public_user_data"]["user_id"] == user_id]


async def test_deletes_during_paging_never_give_false_deletions(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    victims: list[str] = []
    org_victims: list[str] = []

    def hook(i: Any, path: str, params: Any) -> None:
        if i is not inst:
            return
        if path == "/users" and params.get("starting_after") and len(victims) < 3:
            # delete a user already walked (before the cursor): shifts offsets, not cursors
            live = inst.user_ids()
            victims.append(live[1])
            inst.delete_user(live[1])
        if path == "/organizations" and params.get("offset") not in (None, "0") and not org_victims:
            first = inst.org_ids()[0]
            org_victims.append(first)
            inst.delete_org(first)

    world.sim.on_request(hook)
    results = await world.sync(full=True)
    assert all(r.ok for r in results), results
    first = world.new_events()
    # Objects deleted behind the walk were seen alive in this pass; they may only be reported as
    # deleted (never a live one), and the next pass reports the rest: together exactly the victims.
    results = await world.sync(full=True)
    assert all(r.ok for r in results), results
    got = first + world.new_events()
    assert sorted(o for t, o in got if t == "user.deleted") == sorted(victims)
    assert sorted(o for t, o in got if t == "organization.deleted") == sorted(org_victims)
    assert not [e for e in got if e[0] in ("user.created", "user.updated", "organization.created")]
    assert world.live_ids("users") == set(inst.user_ids())
    assert world.live_ids("organizations") == set(inst.org_ids())
    assert world.live_ids("organization_memberships") == set(inst.membership_ids())


async def test_offset_shift_does_not_hide_live_orgs(db_url: str, tmp_path: Path) -> None:
    w = make_world(db_url, tmp_path, orgs=25, page_size=5)
    try:
        await baseline(w)
        inst = w.inst()
        deleted: list[str] = []

        def hook(i: Any, path: str, params: Any) -> None:
            if path == "/organizations" and params.get("offset") == "10" and not deleted:
                # two orgs before the offset vanish: the next pages skip two live orgs
                for oid in inst.org_ids()[:2]:
                    deleted.append(oid)
                    inst.delete_org(oid)

        w.sim.on_request(hook)
        results = await w.sync(resources=["organizations"], full=True)
        assert all(r.ok for r in results)
        # the skipped live orgs were not stamped: confirmed alive by GET, not reported deleted
        assert w.new_events() == []
        assert w.live_ids("organizations") >= set(inst.org_ids())
        results = await w.sync(resources=["organizations"], full=True)
        assert sorted(w.new_events()) == sorted(("organization.deleted", o) for o in deleted)
        assert w.live_ids("organizations") == set(inst.org_ids())
    finally:
        w.db.dispose()


async def test_5xx_storm_is_retried(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    created = inst.create_user(first_name="Storm")
    world.sim.inject("5xx", count=2, path_prefix="/users")
    results = await world.sync(resources=["users"], full=True)
    assert results[0].ok and results[0].requests > results[0].pages
    assert world.new_events() == [("user.created", created["id"])]


async def test_exhausted_retries_fail_the_pass_and_infer_no_deletions(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    victim = inst.user_ids()[0]
    inst.delete_user(victim)

    calls = {"n": 0}

    def hook(i: Any, path: str, params: Any) -> None:
        if path == "/users" and params.get("starting_after"):
            calls["n"] += 1
            if calls["n"] == 1:
                world.sim.inject("5xx", count=10, path_prefix="/users")

    world.sim.on_request(hook)
    results = await world.sync(resources=["users"], full=True)
    assert results[0].status == "failed" and "gave up" in (results[0].error or "")
    assert world.new_events() == []
    assert victim in world.live_ids("users")
    world.sim.clear_faults()
    results = await world.sync(resources=["users"], full=True)
    assert results[0].ok
    assert world.new_events() == [("user.deleted", victim)]


async def test_truncated_and_invalid_json_are_refetched(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    uid = inst.user_ids()[2]
    inst.update_user(uid, last_name="Changed")
    world.sim.inject("truncated", count=1, path_prefix="/users")
    world.sim.inject("invalid_json", count=1, path_prefix="/users")
    results = await world.sync(resources=["users"], full=True)
    assert results[0].ok
    assert world.new_events() == [("user.updated", uid)]


async def test_key_revoked_midway_quarantines_only_that_tenant(db_url: str, tmp_path: Path) -> None:
    w = make_world(db_url, tmp_path, tenants=("acme", "beta"))
    try:
        await baseline(w, "acme", "beta")
        w.new_events("beta")
        acme, beta = w.inst("acme"), w.inst("beta")
        beta_new = beta.create_user(first_name="B")

        def hook(i: Any, path: str, params: Any) -> None:
            if i is acme and path == "/users" and params.get("starting_after"):
                acme.revoke_key()

        w.sim.on_request(hook)
        results = await w.sync(full=True)
        by = {(r.tenant, r.resource): r for r in results}
        assert by[("acme", "users")].status == "failed"
        assert {
            by[("acme", r)].status for r in ("organizations", "organization_memberships", "invitations")
        } == {"skipped"}
        assert all(
            by[("beta", r)].ok for r in ("users", "organizations", "organization_memberships", "invitations")
        )
        assert w.tenant("acme").key_status == "key_rejected"
        assert w.tenant("beta").key_status == "ok"
        w.cursor = 0
        assert [e for e in w.new_events("beta") if e[0] != "user.created" or e[1] == beta_new["id"]] == [
            ("user.created", beta_new["id"])
        ]
    finally:
        w.db.dispose()


async def test_incremental_users_pass_is_cheap_and_exact(db_url: str, tmp_path: Path) -> None:
    w = make_world(db_url, tmp_path, users=300, page_size=10)
    try:
        await baseline(w)
        inst = w.inst()
        idle = await w.sync(resources=["users"])
        assert idle[0].ok and idle[0].mode == "incremental" and idle[0].requests <= 3
        assert w.new_events() == []
        ids = inst.user_ids()
        created = inst.create_user(first_name="Inc")
        inst.update_user(ids[10], first_name="Changed")
        inst.delete_user(ids[200])
        inst.delete_user(ids[20])
        res = await w.sync(resources=["users"])
        assert res[0].ok and res[0].mode == "incremental"
        assert res[0].requests < 300 / 10 / 2, res[0]  # bisection, not a full walk
        assert Counter(w.new_events()) == Counter(
            {
                ("user.created", created["id"]): 1,
                ("user.updated", ids[10]): 1,
                ("user.deleted", ids[200]): 1,
                ("user.deleted", ids[20]): 1,
            }
        )
        assert w.live_ids("users") == set(inst.user_ids())
    finally:
        w.db.dispose()


async def test_invitations_emit_extension_types(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    inv = inst.create_invitation("new@example.com")
    await world.sync(resources=["invitations"], full=True)
    assert world.new_events() == [("invitation.created", inv["id"])]
    inst.set_invitation_status(inv["id"], "revoked")
    await world.sync(resources=["invitations"], full=True)
    assert world.new_events() == [("invitation.revoked", inv["id"])]


async def test_stop_event_interrupts_at_a_page_boundary_and_the_next_pass_resumes(world: World) -> None:
    stop = asyncio.Event()
    pages = {"n": 0}

    def hook(i: Any, path: str, params: Any) -> None:
        if path == "/users":
            pages["n"] += 1
            if pages["n"] == 2:
                stop.set()

    world.sim.on_request(hook)
    results = await world.sync(resources=["users"], full=True, stop=stop)
    assert results[0].status == "interrupted" and 1 <= results[0].pages <= 2
    assert 0 < len(world.live_ids("users")) < 30
    results = await world.sync(resources=["users"], full=True)
    assert results[0].ok
    assert world.live_ids("users") == set(world.inst().user_ids())
    # the resumed pass started after the committed pages
    assert results[0].objects < 30


async def test_a_busy_tenant_is_skipped(world: World) -> None:
    from clerk_sync.store import leases

    assert leases.acquire(world.db, f"tenant:{world.tenant().id}", "someone-else", 60)
    results = await world.sync(resources=["users"])
    assert results[0].status == "skipped" and "someone-else" in (results[0].error or "")


async def test_on_result_hears_every_pass_once(db_url: str, tmp_path: Path) -> None:
    from clerk_sync.resources import resolve
    from clerk_sync.sync import sync_tenants

    w = make_world(db_url, tmp_path, tenants=("acme", "beta"))
    try:
        heard: list[tuple[str, str, str]] = []
        results = await sync_tenants(
            w.ctx,
            [w.tenant("acme"), w.tenant("beta")],
            resolve(["users", "organizations"]),
            full=True,
            on_result=lambda r: heard.append((r.tenant, r.resource, r.status)),
        )
        assert sorted(heard) == sorted((r.tenant, r.resource, r.status) for r in results)
        assert len(heard) == 4 and all(s == "ok" for _, _, s in heard)
    finally:
        w.db.dispose()


async def test_a_dead_owners_lease_is_taken_over(world: World) -> None:
    from clerk_sync.store import leases
    from clerk_sync.sync import _pid_scope

    dead = f"{_pid_scope()}:999999:deadbeef"  # no such pid
    assert leases.acquire(world.db, f"tenant:{world.tenant().id}", dead, 600)
    results = await world.sync(resources=["users"])
    assert results[0].ok


async def test_pass_failure_records_the_run(world: World) -> None:
    from clerk_sync.store import runs

    world.inst().revoke_key()
    results = await world.sync(resources=["users"])
    assert results[0].status == "failed"
    tenant_id = world.tenant().id
    with world.db.read() as conn:
        latest = runs.last_runs(conn, tenant_id)[0]
    assert latest.status == "failed" and latest.error and "sk_live_acme" not in latest.error


async def test_membership_updates_and_org_deletion(world: World) -> None:
    await baseline(world)
    inst = world.inst()
    org_a, org_b = inst.org_ids()[:2]
    members_of_b = {m for m in world.live_ids("organization_memberships") if _org_of(world, m) == org_b}
    mem = min(
        m
        for m in world.live_ids("organization_memberships")
        if _org_of(world, m) == org_a and _membership(world, m)["role"] == "org:member"
    )
    inst.update_membership(mem, role="org:admin")
    other = min(
        m for m in world.live_ids("organization_memberships") if _org_of(world, m) == org_a and m != mem
    )
    inst.remove_membership(other)
    inst.delete_org(org_b)
    results = await world.sync(full=True)
    assert all(r.ok for r in results), results
    got = Counter(world.new_events())
    expected = Counter(
        [
            ("organizationMembership.updated", mem),
            ("organizationMembership.deleted", other),
            ("organization.deleted", org_b),
        ]
        + [("organizationMembership.deleted", m) for m in members_of_b]
    )
    assert got == expected
    for e in world.all_events():
        webhook_schemas.validate_if_available(e)
    updated = next(e for e in world.all_events() if e["type"] == "organizationMembership.updated")
    assert "role" in updated["clerk_sync"]["changed_fields"]
    assert updated["clerk_sync"]["previous"]["role"] == "org:member"


def _membership(world: World, membership_id: str) -> dict[str, Any]:
    import orjson

    from clerk_sync.store import mirror

    tid = world.tenant().id
    assert tid is not None
    with world.db.read() as conn:
        row = mirror.get(conn, tid, "organization_memberships", membership_id)
    assert row is not None
    data: dict[str, Any] = orjson.loads(row.data)
    return data


def _org_of(world: World, membership_id: str) -> str:
    return str(_membership(world, membership_id)["organization"]["id"])


async def test_concurrent_passes_of_one_tenant_share_the_lease(world: World) -> None:
    from clerk_sync.resources import ORGANIZATIONS, USERS
    from clerk_sync.store import leases
    from clerk_sync.sync import run_pass

    tenant = world.tenant()
    users, orgs = await asyncio.gather(
        run_pass(world.ctx, tenant, USERS, "full"), run_pass(world.ctx, tenant, ORGANIZATIONS, "full")
    )
    assert users.ok and orgs.ok
    assert leases.holder(world.db, f"tenant:{tenant.id}") is None  # released once both ended
    assert world.ctx.held == {}


async def test_a_refused_resume_cursor_restarts_the_pass(world: World) -> None:
    from clerk_sync.store import runs
    from clerk_sync.store.db import now_ms

    tenant_id = world.tenant().id
    assert tenant_id is not None
    with world.db.transaction() as conn:
        run = runs.start(conn, tenant_id, "users", "full", now_ms())
        runs.save_cursor(conn, run, '{"after": "user_unknown"}')
        runs.finish(conn, run, "interrupted", now_ms())
    results = await world.sync(resources=["users"], full=True)
    assert results[0].ok, results
    assert world.live_ids("users") == set(world.inst().user_ids())
    with world.db.read() as conn:
        statuses = [r.status for r in runs.last_runs(conn, tenant_id)]
    assert statuses[:3] == ["ok", "failed", "interrupted"]


async def test_a_pass_cancelled_mid_page_records_interrupted_not_running(world: World) -> None:
    from sqlalchemy import select

    from clerk_sync.store.models import SyncRun

    world.sim.inject("slow", count=100, path_prefix="/users", delay_s=30.0)
    task = asyncio.create_task(world.sync(resources=["users"], full=True))
    for _ in range(500):
        await asyncio.sleep(0.01)
        with world.db.read() as conn:
            if conn.execute(select(SyncRun.__table__.c.id)).first():  # type: ignore[attr-defined]
                break
    await asyncio.sleep(0.1)
    task.cancel()  # what the daemon does at its shutdown deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    with world.db.read() as conn:
        statuses = [r[0] for r in conn.execute(select(SyncRun.__table__.c.status))]  # type: ignore[attr-defined]
    assert statuses == ["interrupted"]


async def test_prefetch_leaves_no_unretrieved_task_exception_when_the_consumer_stops() -> None:
    # An interrupted pass stops consuming after a page while the next fetch has already ended
    # (StopAsyncIteration on the last page): asyncio must not log "Task exception was never retrieved".
    import gc

    from clerk_sync.sync import prefetch

    async def pages() -> AsyncIterator[int]:
        yield 1

    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
    gen = prefetch(pages())
    assert await anext(gen) == 1
    for _ in range(3):
        await asyncio.sleep(0)  # let the pending fetch finish
    await gen.aclose()
    del gen
    gc.collect()
    assert reported == []
