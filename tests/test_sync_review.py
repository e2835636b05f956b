"""Regression tests for correctness bugs found in review (incremental users, resume, leases)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sync_world import World, make_world


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = make_world(db_url, tmp_path, users=300, page_size=10)
    yield w
    w.db.dispose()


async def _baseline(world: World) -> None:
    results = await world.sync(resources=["users"], full=True)
    assert all(r.ok for r in results), results
    world.new_events()


async def test_incremental_walk_shifted_by_a_deletion_loses_no_update(world: World) -> None:
    """A user deleted ahead of the -updated_at offset walk shifts the next page back by one: the
    user at the page boundary is skipped. Its update must still be reported (this pass or the next),
    i.e. the watermark must not move past it."""
    await _baseline(world)
    inst = world.inst()
    ids = inst.user_ids()
    t0 = int(time.time() * 1000) + 10_000
    # The newest update (deleted during the walk) is far, in created_at, from the others, so the
    # count bisection that finds the deletion does not re-read them by chance.
    updated = [*ids[:24], ids[-1]]
    for k, uid in enumerate(updated):  # updated[24] newest
        world.sim.clock_ms = t0 + k * 1000
        inst.update_user(uid, first_name=f"Changed{k}")
    world.sim.clock_ms = None
    deleted: list[str] = []

    def hook(i: Any, path: str, params: Any) -> None:
        paging_on = params.get("offset") not in (None, "0")
        if path == "/users" and params.get("order_by") == "-updated_at" and paging_on and not deleted:
            deleted.append(updated[24])
            inst.delete_user(updated[24])  # already read on page 1

    world.sim.on_request(hook)
    res = await world.sync(resources=["users"])
    assert res[0].ok and res[0].mode == "incremental", res
    res = await world.sync(resources=["users"])
    assert res[0].ok and res[0].mode == "incremental", res
    got = world.new_events()
    assert sorted(o for t, o in got if t == "user.updated") == sorted(updated)
    assert [o for t, o in got if t == "user.deleted"] == deleted


async def test_a_pass_resumed_twice_keeps_the_first_runs_start_as_watermark(world: World) -> None:
    """Pass 1 walks page 1 and stops; a user of page 1 changes; pass 2 resumes, walks a page and
    stops; pass 3 finishes. The change was never walked, so the users watermark must not be pass 2's
    start (the next incremental pass would read only later updates and never report it)."""
    await _baseline(world)
    inst = world.inst()

    async def interrupted_after_one_page() -> None:
        stop = asyncio.Event()
        calls = {"n": 0}

        def hook(i: Any, path: str, params: Any) -> None:
            if path == "/users":
                calls["n"] += 1
                if calls["n"] == 2:
                    stop.set()

        world.sim.on_request(hook)
        try:
            res = await world.sync(resources=["users"], full=True, stop=stop)
        finally:
            world.sim._hooks.remove(hook)
        assert res[0].status == "interrupted", res

    await interrupted_after_one_page()
    first_page_user = inst.user_ids()[0]  # +created_at: walked by pass 1
    inst.update_user(first_page_user, first_name="ChangedBehindTheWalk")
    await asyncio.sleep(0.01)  # pass 2 starts strictly later than the update
    await interrupted_after_one_page()
    res = await world.sync(resources=["users"], full=True)
    assert res[0].ok, res
    res = await world.sync(resources=["users"])  # incremental
    assert res[0].ok and res[0].mode == "incremental", res
    assert ("user.updated", first_page_user) in world.new_events()


async def test_the_lease_is_renewed_while_one_request_outlasts_its_ttl(world: World) -> None:
    """A page request slower than the lease TTL (a Clerk outage in retries, Retry-After waits) must
    not let another process take the tenant: the lease is renewed while the pass waits."""
    from clerk_sync.config import DaemonSettings
    from clerk_sync.store import leases

    ttl = 0.3
    world.ctx.settings = world.ctx.settings.replace(daemon=DaemonSettings(lease_ttl_s=ttl))
    scope = f"tenant:{world.tenant().id}"
    world.sim.inject("slow", count=1, path_prefix="/users", delay_s=0.9)
    task = asyncio.create_task(world.sync(resources=["users"], full=True))
    held = None
    for _ in range(200):  # until the pass holds the lease
        await asyncio.sleep(0.005)
        held = leases.holder(world.db, scope)
        if held is not None:
            break
    assert held is not None
    first_until_ms = held[1]
    while time.time() * 1000 < first_until_ms + 100:  # the first grant has run out
        await asyncio.sleep(0.02)
    assert not task.done()  # still inside the slow request
    taken = await asyncio.to_thread(leases.acquire, world.db, scope, "other-replica", 60)
    results = await task
    assert not taken, "another process took the lease of a tenant still being synced"
    assert results[0].ok, results


async def test_a_live_owner_in_another_pid_namespace_keeps_its_lease(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two containers with one hostname (host networking) but separate PID namespaces: the other's
    pid does not exist here, yet that process is alive. Its lease must not be taken over."""
    import os

    from clerk_sync.store import leases
    from clerk_sync.sync import SyncContext

    real_readlink = os.readlink

    def other_namespace(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == "/proc/self/ns/pid":
            return "pid:[1]"
        return real_readlink(path, *args, **kwargs)

    with monkeypatch.context() as m:  # how the other container names itself
        m.setattr(os, "getpid", lambda: 999_999)  # no such pid in this namespace
        m.setattr(os, "readlink", other_namespace)
        other = SyncContext(
            settings=world.ctx.settings,
            db=world.db,
            keyring=world.ctx.keyring,
            budgets=world.ctx.budgets,
        ).owner
    assert leases.acquire(world.db, f"tenant:{world.tenant().id}", other, 600)
    results = await world.sync(resources=["users"])
    assert results[0].status == "skipped", results


async def test_a_pass_whose_lease_was_taken_commits_nothing_more(world: World) -> None:
    """The process slept past its TTL (VM pause, DB unreachable) and another replica took the
    tenant: the page it had in flight must not be written (no events from two writers)."""
    from sqlalchemy import update

    from clerk_sync.store.leases import LEASES

    await _baseline(world)
    inst = world.inst()
    uid = inst.user_ids()[0]  # on the first page of a +created_at walk
    inst.update_user(uid, first_name="WrittenByTheOtherReplica")
    scope = f"tenant:{world.tenant().id}"

    def hook(i: Any, path: str, params: Any) -> None:
        if path == "/users" and not params.get("starting_after"):
            with world.db.transaction() as conn:  # the other replica takes the lease over
                conn.execute(update(LEASES).where(LEASES.c.scope == scope).values(owner="other-replica"))

    world.sim.on_request(hook)
    results = await world.sync(resources=["users"], full=True)
    assert results[0].status == "failed" and "lost the lease" in (results[0].error or ""), results
    assert world.new_events() == []
