"""Sessions against the simulator: each scripted change gives exactly the expected events.

The freshness targets are set to 0 so every user holding open sessions is re-listed on every pass
(the scenarios test what a listing yields; the schedule is tested in ``test_sessions.py`` and
``test_sessions_store.py``). Every session event is validated against Clerk's
``SessionEventPayload``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from clerk_sync.config import SessionSettings
from clerk_sync.resources import resolve
from clerk_sync.store import mirror, session_checks
from clerk_sync.sync import sync_tenants
from tests import webhook_schemas
from tests.sync_world import World, make_world

RESOURCES = ["users", "sessions"]
ALWAYS_RECHECK = SessionSettings(max_requests_per_pass=1000, fresh_active_s=0.0, fresh_idle_s=0.0)


@functools.cache
def _session_schema() -> dict[str, Any]:
    """``SessionEventPayload`` made checkable by a JSON-schema validator, with two documented fix-ups.

    1. It is ``allOf: [Session, {properties: {user}}]`` while ``Session`` says
       ``additionalProperties: false``: taken literally no payload (Clerk's own examples included)
       could carry ``user``. The two parts are merged into one object schema, still closed.
    2. ``Session.status`` lacks ``pending``, which ``session.pending`` carries (Clerk's own example).
    """
    doc = copy.deepcopy(webhook_schemas._spec())
    schemas = doc["components"]["schemas"]
    session = schemas["Session"]
    session["properties"]["status"]["enum"].append("pending")
    extra = schemas["SessionEventPayload"]["allOf"][1]
    schemas["SessionEventPayload"] = {
        **session,
        "properties": {**session["properties"], **extra["properties"]},
        "required": [*session["required"], *extra["required"]],
    }
    return doc


def validate_session_event(event: dict[str, Any]) -> None:
    """Raise unless ``event`` is a valid session webhook (Clerk's types and our extension types)."""
    doc = _session_schema()
    schema = {
        **doc,
        "allOf": [
            {"$ref": "#/components/schemas/WebhookEventPayload"},
            {
                "properties": {"data": {"$ref": "#/components/schemas/SessionEventPayload"}},
                "required": ["data"],
            },
        ],
    }
    jsonschema.Draft7Validator(schema).validate(event)
    assert event["type"].startswith("session.")
    assert event["data"]["object"] == "session"


def test_the_fixed_up_schema_accepts_clerks_examples_and_still_rejects_garbage() -> None:
    examples = webhook_schemas._spec()["components"]["examples"]
    for name in ("Created", "Pending", "Ended", "Removed", "Revoked"):
        validate_session_event(examples[f"Session{name}EventPayloadExample"]["value"])
    good = examples["SessionEndedEventPayloadExample"]["value"]
    with pytest.raises(jsonschema.ValidationError):
        validate_session_event({**good, "data": {**good["data"], "surprise": 1}})
    with pytest.raises(jsonschema.ValidationError):
        validate_session_event({**good, "data": {k: v for k, v in good["data"].items() if k != "user"}})
    with pytest.raises(jsonschema.ValidationError):
        validate_session_event({**good, "data": {**good["data"], "status": "sleeping"}})


WorldFactory = Callable[..., World]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[WorldFactory]:
    """Make a world (simulator + database + tenant ``acme``); disposed after the test."""
    made: list[World] = []

    def make(
        *,
        extension_types: bool = True,
        users: int = 40,
        page_size: int = 10,
        sessions: SessionSettings = ALWAYS_RECHECK,
    ) -> World:
        w = make_world(db_url, tmp_path, users=users, page_size=page_size)
        settings = w.ctx.settings
        w.ctx.settings = settings.replace(
            sessions=sessions,
            events=dataclasses.replace(settings.events, extension_types=extension_types),
        )
        made.append(w)
        return w

    yield make
    for w in made:
        w.db.dispose()


async def sync(w: World) -> list[tuple[str, str]]:
    results = await w.sync(resources=RESOURCES)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    for e in w.all_events():
        if e["type"].startswith("session."):
            validate_session_event(e)
    return w.new_events()


def session_events(w: World) -> list[dict[str, Any]]:
    return [e for e in w.all_events() if e["type"].startswith("session.")]


async def baseline(w: World) -> None:
    assert await sync(w) == []  # events.initial = "none": the first pass is silent
    assert await sync(w) == []  # and an unchanged tenant stays silent


def signed_in_user(w: World) -> str:
    inst = w.inst()
    return next(
        uid
        for uid in inst.user_ids()
        if any(s["status"] == "active" for s in inst.list_sessions(uid, None, None))
    )


async def test_baseline_mirrors_every_session_silently(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    inst = w.inst()
    expected = {s["id"] for uid in inst.user_ids() for s in inst.list_sessions(uid, None, None)}
    assert expected and w.live_ids("sessions") == expected


async def test_sign_in_gives_session_created(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    uid = w.inst().user_ids()[3]
    sess = w.inst().sign_in(uid)
    assert await sync(w) == [("session.created", sess["id"])]
    (event,) = session_events(w)
    assert event["data"]["user"]["id"] == uid and event["data"]["status"] == "active"
    assert await sync(w) == []


async def test_sign_in_of_a_new_user_gives_user_then_session_created(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    user = w.inst().create_user()
    sess = w.inst().sign_in(user["id"])
    assert await sync(w) == [("user.created", user["id"]), ("session.created", sess["id"])]


async def test_sign_out_gives_session_ended(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    sess = w.inst().sign_in(w.inst().user_ids()[5])
    await sync(w)
    w.inst().set_session_status(sess["id"], "ended")
    assert await sync(w) == [("session.ended", sess["id"])]
    assert session_events(w)[-1]["data"]["status"] == "ended"


async def test_revoke_gives_session_revoked(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    uid = signed_in_user(w)
    sid = next(s["id"] for s in w.inst().list_sessions(uid, None, None) if s["status"] == "active")
    w.inst().set_session_status(sid, "revoked")
    assert await sync(w) == [("session.revoked", sid)]


@pytest.mark.parametrize("extension_types", [True, False])
async def test_expiry_gives_the_extension_type_unless_switched_off(
    world: WorldFactory, extension_types: bool
) -> None:
    w = world(extension_types=extension_types)
    await baseline(w)
    uid = signed_in_user(w)
    sid = next(s["id"] for s in w.inst().list_sessions(uid, None, None) if s["status"] == "active")
    w.inst().set_session_status(sid, "expired")
    assert await sync(w) == ([("session.expired", sid)] if extension_types else [])
    tenant_id = w.tenant().id or 0
    with w.db.read() as conn:
        row = mirror.get(conn, tenant_id, "sessions", sid)
    assert row is not None and '"status":"expired"' in row.data  # recorded either way


async def test_activity_only_changes_give_nothing(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    uid = signed_in_user(w)
    sid = next(s["id"] for s in w.inst().list_sessions(uid, None, None) if s["status"] == "active")
    inst = w.inst()
    inst._session_over.setdefault(sid, {}).update(last_active_at=inst.now(), updated_at=inst.now())
    assert await sync(w) == []


async def test_purged_old_session_is_recorded_without_an_event(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    inst = w.inst()
    sid = next(
        s["id"] for u in inst.user_ids() for s in inst.list_sessions(u, None, None) if s["status"] != "active"
    )
    inst.purge_session(sid)
    assert await sync(w) == []
    assert sid not in w.live_ids("sessions")
    tenant_id = w.tenant().id or 0
    with w.db.read() as conn:
        row = mirror.get(conn, tenant_id, "sessions", sid)
    assert row is not None and row.deleted_ms is not None  # tombstoned: no longer listed by Clerk


async def test_purged_open_session_past_expiry_gives_session_expired(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    inst = w.inst()
    now = inst.now()
    lapsed = [
        s
        for u in inst.user_ids()
        for s in inst.list_sessions(u, None, None)
        if s["status"] == "active" and s["expire_at"] < now
    ]
    assert lapsed, "the generated data has old active sessions"
    sid = lapsed[0]["id"]
    inst.purge_session(sid)
    assert await sync(w) == [("session.expired", sid)]
    assert session_events(w)[-1]["data"]["status"] == "expired"


async def test_user_deleted_with_live_sessions(world: WorldFactory) -> None:
    w = world()
    await baseline(w)
    inst = w.inst()
    uid = inst.user_ids()[7]
    inst.sign_in(uid)
    await sync(w)
    listed = inst.list_sessions(uid, None, None)
    open_ids = sorted(s["id"] for s in listed if s["status"] == "active")
    assert open_ids
    inst.delete_user(uid)
    got = await sync(w)
    assert got[0] == ("user.deleted", uid)
    assert sorted(got[1:]) == [("session.removed", sid) for sid in open_ids]
    for e in session_events(w)[-len(open_ids) :]:
        assert e["data"]["status"] == "removed" and e["data"]["user"]["id"] == uid
    assert not (w.live_ids("sessions") & {s["id"] for s in listed})
    tenant_id = w.tenant().id or 0
    with w.db.read() as conn:
        assert session_checks.load(conn, tenant_id, [uid]) == {}
    assert await sync(w) == []


async def test_user_deleted_before_the_users_pass_noticed(world: WorldFactory) -> None:
    """``--resource sessions`` alone: a vanished open session reveals the deleted user."""
    w = world()
    await baseline(w)
    inst = w.inst()
    uid = inst.user_ids()[4]
    sid = inst.sign_in(uid)["id"]
    assert await sync(w) == [("session.created", sid)]
    open_ids = sorted(s["id"] for s in inst.list_sessions(uid, None, None) if s["status"] == "active")
    inst.delete_user(uid)
    results = await w.sync(resources=["sessions"])
    assert [r.status for r in results] == ["ok"]
    assert sorted(w.new_events()) == [("session.removed", sid) for sid in open_ids]
    # The users pass then reports the user; the sessions stay reported once.
    assert await sync(w) == [("user.deleted", uid)]


async def test_a_user_with_more_sessions_than_a_page(world: WorldFactory) -> None:
    w = world(page_size=3)
    await baseline(w)
    uid = w.inst().user_ids()[2]
    new = [w.inst().sign_in(uid)["id"] for _ in range(7)]
    assert sorted(await sync(w)) == sorted(("session.created", sid) for sid in new)
    assert await sync(w) == []


async def test_sessions_alone_and_the_default_resources(world: WorldFactory) -> None:
    w = world()
    # With no --resource every resource runs, sessions last (after users).
    results = await sync_tenants(w.ctx, [w.tenant()], resolve(None))
    assert [r.resource for r in results][-1] == "sessions"
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    sess = w.inst().sign_in(w.inst().user_ids()[1])
    results = await w.sync(resources=["sessions"])
    assert [r.resource for r in results] == ["sessions"] and results[0].ok
    assert w.new_events() == [("session.created", sess["id"])]


def session_requests(w: World) -> int:
    return int(w.sim.stats("sk_live_acme")["requests_by_path"].get("/sessions", 0))


async def test_default_schedule_lists_only_the_users_who_signed_in(world: WorldFactory) -> None:
    w = world(sessions=SessionSettings())
    await baseline(w)
    before = session_requests(w)
    assert await sync(w) == []
    assert session_requests(w) == before  # idle: no session listing at all
    inst = w.inst()
    a, b = inst.sign_in(inst.user_ids()[0]), inst.sign_in(inst.user_ids()[9])
    assert sorted(await sync(w)) == sorted([("session.created", a["id"]), ("session.created", b["id"])])
    assert session_requests(w) == before + 2


async def test_the_cap_carries_over_to_the_next_pass(world: WorldFactory) -> None:
    w = world(sessions=SessionSettings(max_requests_per_pass=5))
    results = await w.sync(resources=RESOURCES)
    assert all(r.ok for r in results)
    # The baseline itself is spread over passes of at most 5 listings each.
    passes = 1
    while True:
        tenant_id = w.tenant().id or 0
        pending, _ = session_checks.sessions_backlog(w.db, tenant_id, settings=w.ctx.settings.sessions)
        if pending == 0:
            break
        before = session_requests(w)
        assert await sync(w) == []
        assert session_requests(w) - before <= 5
        passes += 1
    assert passes > 3
    inst = w.inst()
    sids = {inst.sign_in(uid)["id"] for uid in inst.user_ids()[:12]}
    seen: list[tuple[str, str]] = []
    for _ in range(3):
        before = session_requests(w)
        seen += await sync(w)
        assert session_requests(w) - before <= 5
    assert sorted(seen) == sorted(("session.created", sid) for sid in sids)


async def test_sign_ins_sharing_one_millisecond_are_all_discovered(world: WorldFactory) -> None:
    w = world(sessions=SessionSettings(), page_size=4)
    await baseline(w)
    inst = w.inst()
    w.sim.clock_ms = inst.now()  # every sign-in below happens in the same millisecond
    sids = {inst.sign_in(uid)["id"] for uid in inst.user_ids()[:11]}
    assert sorted(await sync(w)) == sorted(("session.created", sid) for sid in sids)
