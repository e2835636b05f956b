"""Sync runs (resumable full passes) and watermarks."""

from __future__ import annotations

from clerk_sync.store import runs
from clerk_sync.store.db import Database


def test_a_stopped_full_pass_is_resumable_until_one_finishes(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        run = runs.start(conn, tenant_id, "users", "full", 100)
        runs.save_cursor(conn, run, '{"after": "u9"}', pages=3)
        assert not runs.has_succeeded(conn, tenant_id, "users")
    with db.transaction() as conn:
        runs.close_stale(conn, tenant_id, "users", 200)
        found = runs.find_resumable(conn, tenant_id, "users")
        assert found is not None and (found.pass_id, found.cursor, found.started_ms) == (
            run,
            '{"after": "u9"}',
            100,
        )
        again = runs.start(conn, tenant_id, "users", "full", 300, pass_id=found.pass_id)
        runs.finish(conn, again, "ok", 400, pages=5)
    with db.read() as conn:
        assert runs.find_resumable(conn, tenant_id, "users") is None
        assert runs.has_succeeded(conn, tenant_id, "users")
        latest = runs.last_runs(conn, tenant_id)
    assert [(r.status, r.pass_id) for r in latest] == [("ok", run), ("interrupted", run)]


def test_watermarks_insert_then_update(db: Database, tenant_id: int) -> None:
    with db.transaction() as conn:
        assert runs.get_watermark(conn, tenant_id, "users", "updated_at") is None
        runs.set_watermark(conn, tenant_id, "users", "updated_at", "5")
        runs.set_watermark(conn, tenant_id, "users", "updated_at", "6")
        assert runs.get_watermark(conn, tenant_id, "users", "updated_at") == "6"
