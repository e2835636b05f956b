"""Mirror rows: upsert, seen stamps, tombstones, deletion candidates and range counts."""

from __future__ import annotations

from typing import Any

from clerk_sync.store import mirror
from clerk_sync.store.db import Database


def row(
    tenant_id: int, oid: str, created: int, *, data: str = "{}", h: str = "h", version: int = 1
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "resource": "users",
        "object_id": oid,
        "data": data,
        "content_hash": h,
        "version": version,
        "created_at_ms": created,
        "updated_at_ms": created,
        "parent_id": None,
        "first_seen_ms": 1,
        "last_seen_ms": 1,
        "seen_pass": 0,
        "deleted_ms": None,
    }


def test_upsert_inserts_then_replaces_but_keeps_first_seen(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        mirror.upsert(conn, [row(tenant_id, "u1", 10), row(tenant_id, "u2", 20)])
    later = row(tenant_id, "u1", 10, data='{"a":1}', h="h2", version=2) | {"first_seen_ms": 99}
    with db.transaction() as conn:
        mirror.upsert(conn, [later])
    with db.read() as conn:
        got = mirror.fetch(conn, tenant_id, "users", ["u1", "u2", "nope"])
    assert set(got) == {"u1", "u2"}
    assert (got["u1"].data, got["u1"].content_hash, got["u1"].version) == ('{"a":1}', "h2", 2)


def test_unseen_lists_live_rows_not_stamped_by_the_pass(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        mirror.upsert(conn, [row(tenant_id, f"u{i}", i) for i in range(5)])
        mirror.mark_seen(conn, tenant_id, "users", ["u0", "u2"], pass_id=7, now_ms=5)
        mirror.tombstone(conn, tenant_id, "users", {"u4": 2}, now_ms=6)
    with db.read() as conn:
        first = mirror.unseen(conn, tenant_id, "users", 7, limit=1)
        rest = mirror.unseen(conn, tenant_id, "users", 7, after_id=first[0].object_id)
        dead = mirror.get(conn, tenant_id, "users", "u4")
    assert [r.object_id for r in first + rest] == ["u1", "u3"]
    assert dead is not None and dead.deleted_ms == 6 and dead.version == 2


def test_live_counts_over_created_at_ranges(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        mirror.upsert(conn, [row(tenant_id, f"u{i}", i * 10) for i in range(10)])
        mirror.tombstone(conn, tenant_id, "users", {"u5": 2}, now_ms=1)
    with db.read() as conn:
        assert mirror.count_live(conn, tenant_id, "users") == 9
        assert mirror.count_live(conn, tenant_id, "users", 20, 60) == 4  # 20,30,40,60 (50 is deleted)
        assert mirror.created_at_at(conn, tenant_id, "users", None, None, 5) == 60
        assert [r.object_id for r in mirror.live_in_range(conn, tenant_id, "users", 0, 25)] == [
            "u0",
            "u1",
            "u2",
        ]
        assert mirror.count_live(conn, tenant_id + 1, "users") == 0
        assert mirror.has_rows(conn, tenant_id, "users") and not mirror.has_rows(
            conn, tenant_id, "organizations"
        )


def test_fetch_handles_more_ids_than_one_in_list(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        mirror.upsert(conn, [row(tenant_id, f"u{i:04}", i) for i in range(1200)])
    with db.read() as conn:
        got = mirror.fetch(conn, tenant_id, "users", [f"u{i:04}" for i in range(1300)])
    assert len(got) == 1200


def test_seen_marks_are_per_pass_and_cleared_when_the_pass_ends(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        mirror.upsert(conn, [row(tenant_id, f"u{i}", i) for i in range(3)])
        mirror.mark_seen(conn, tenant_id, "users", ["u0"], pass_id=1, now_ms=5)
        mirror.mark_seen(conn, tenant_id, "users", ["u0"], pass_id=1, now_ms=6)  # a re-run page: no error
        mirror.mark_seen(conn, tenant_id, "users", ["u1"], pass_id=2, now_ms=5)
    with db.read() as conn:
        assert [r.object_id for r in mirror.unseen(conn, tenant_id, "users", 1)] == ["u1", "u2"]
        assert [r.object_id for r in mirror.unseen(conn, tenant_id, "users", 2)] == ["u0", "u2"]
    with db.transaction() as conn:
        mirror.clear_seen(conn, tenant_id, "users")
    with db.read() as conn:
        assert len(mirror.unseen(conn, tenant_id, "users", 1)) == 3
