"""Outbox: duplicate event ids are ignored, sequences are gapless and per tenant."""

from __future__ import annotations

from clerk_sync.store import outbox
from clerk_sync.store.db import Database
from tests.factories import add_tenant


def event(eid: str, type_: str = "user.created") -> outbox.NewEvent:
    envelope = {"data": {"id": eid}, "object": "event", "type": type_, "clerk_sync": {"event_id": eid}}
    return outbox.NewEvent(eid, type_, "users", eid, envelope, 1)


def test_append_assigns_sequences_and_ignores_duplicates(db: Database, tenant_id: int) -> None:
    other = add_tenant(db, "beta")
    with db.transaction() as conn:
        assert outbox.append(conn, tenant_id, [event("e1"), event("e2"), event("e1")]) == [1, 2]
        assert outbox.append(conn, other, [event("x1")]) == [1]
    with db.transaction() as conn:
        assert outbox.append(conn, tenant_id, [event("e2"), event("e3", "user.deleted")]) == [3]
    with db.read() as conn:
        mine = outbox.read(conn, tenant_id=tenant_id)
        after = outbox.read(conn, tenant_id=tenant_id, after_sequence=1)
        deleted = outbox.read(conn, types=["user.deleted"])
        users = outbox.read(conn, types=["user"])
        assert outbox.count(conn) == 4
    assert [e.sequence for _, e in mine] == [1, 2, 3]
    assert [e.event_id for _, e in after] == ["e2", "e3"]
    assert [e.event_id for _, e in deleted] == ["e3"]
    assert len(users) == 4
    assert mine[2][1].envelope()["clerk_sync"]["sequence"] == 3


def test_rolled_back_append_leaves_no_trace(db: Database, tenant_id: int) -> None:
    class Boom(Exception):
        pass

    try:
        with db.transaction() as conn:
            outbox.append(conn, tenant_id, [event("e1")])
            raise Boom
    except Boom:
        pass
    with db.transaction() as conn:
        assert outbox.append(conn, tenant_id, [event("e1")]) == [1]
