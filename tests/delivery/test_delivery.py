"""Delivery: signed webhooks verified by an independent library, ordering, retries, JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clerk_sync.delivery.signing import SigningSecret
from clerk_sync.delivery.sinks import JsonlSink, WebhookSink
from clerk_sync.delivery.worker import Deliverer, backoff_s
from clerk_sync.store import sinks as cursors
from clerk_sync.store.db import Database, now_ms
from clerk_sync.store.models import OutboxEvent, Tenant

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A webhook endpoint that verifies like Clerk's customers do and can be told to fail."""

    def __init__(self) -> None:
        self.verifier = standardwebhooks.Webhook(SECRET)
        self.received: list[dict] = []
        self.ids: list[str] = []
        self.fail_next: list[int] = []
        routes = [Route("/hook", self.handle, methods=["POST"])]
        self.app = Starlette(routes=routes)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        payload = self.verifier.verify(body, headers)  # raises on a bad signature
        if self.fail_next:
            return Response(status_code=self.fail_next.pop(0), headers={"Retry-After": "7"})
        self.received.append(payload)
        self.ids.append(request.headers["svix-id"])
        return Response(status_code=204)


def _seed(db: Database, tenant: str, n: int) -> int:
    with db.transaction() as conn:
        tid = conn.execute(
            Tenant.__table__.insert().values(  # type: ignore[attr-defined]
                name=tenant,
                created_ms=now_ms(),
                updated_ms=now_ms(),
                event_seq=n,
                key_status="ok",
                enabled=True,
            )
        ).inserted_primary_key[0]
        for seq in range(1, n + 1):
            payload = {"type": "user.created", "object": "event", "data": {"id": f"user_{seq}"}, "seq": seq}
            conn.execute(
                OutboxEvent.__table__.insert().values(  # type: ignore[attr-defined]
                    tenant_id=tid,
                    sequence=seq,
                    event_id=f"evt_{tenant}_{seq}",
                    type="user.created",
                    resource="users",
                    object_id=f"user_{seq}",
                    created_ms=now_ms(),
                    payload=json.dumps(payload),
                )
            )
    return int(tid)


def _sink(receiver: Receiver) -> WebhookSink:
    return WebhookSink(
        "hook", "http://receiver/hook", SigningSecret(SECRET), transport=httpx.ASGITransport(app=receiver.app)
    )


async def test_webhooks_are_signed_and_delivered_in_order_once(db: Database) -> None:
    _seed(db, "acme", 3)
    receiver = Receiver()
    deliverer = Deliverer(db, [_sink(receiver)])
    report = await deliverer.deliver_once()
    again = await deliverer.deliver_once()
    await deliverer.aclose()
    assert report.delivered == 3
    assert again.delivered == 0
    assert [p["seq"] for p in receiver.received] == [1, 2, 3]
    assert receiver.ids == ["evt_acme_1", "evt_acme_2", "evt_acme_3"]


async def test_a_failure_holds_back_later_events_and_keeps_the_id(db: Database) -> None:
    _seed(db, "acme", 3)
    receiver = Receiver()
    receiver.fail_next = [500]
    clock = [1_000_000]
    deliverer = Deliverer(db, [_sink(receiver)], clock_ms=lambda: clock[0])
    first = await deliverer.deliver_once()
    assert (first.delivered, first.failed) == (0, 1)
    assert receiver.received == []
    # Not due yet: the 5 s step of the schedule.
    assert (await deliverer.deliver_once()).waiting == 1
    clock[0] += int(backoff_s(1) * 1000)
    second = await deliverer.deliver_once()
    await deliverer.aclose()
    assert second.delivered == 3
    assert receiver.ids == ["evt_acme_1", "evt_acme_2", "evt_acme_3"]


async def test_retry_after_from_the_receiver_is_honoured(db: Database) -> None:
    tid = _seed(db, "acme", 1)
    receiver = Receiver()
    receiver.fail_next = [429]
    clock = [5_000_000]
    deliverer = Deliverer(db, [_sink(receiver)], clock_ms=lambda: clock[0])
    await deliverer.deliver_once()
    await deliverer.aclose()
    (stream,) = cursors.pending_streams(db, "hook")
    assert stream.tenant_id == tid
    assert stream.next_attempt_ms == clock[0] + 7000


async def test_one_tenants_failure_does_not_block_another(db: Database) -> None:
    _seed(db, "acme", 2)
    _seed(db, "beta", 2)
    receiver = Receiver()
    receiver.fail_next = [503]
    deliverer = Deliverer(db, [_sink(receiver)])
    report = await deliverer.deliver_once()
    await deliverer.aclose()
    assert report.failed == 1
    assert receiver.ids == ["evt_beta_1", "evt_beta_2"]


async def test_jsonl_sink_appends_private_file(db: Database, tmp_path: Path) -> None:
    _seed(db, "acme", 2)
    path = tmp_path / "out" / "events.jsonl"
    deliverer = Deliverer(db, [JsonlSink("archive", path)])
    await deliverer.deliver_once()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert path.stat().st_mode & 0o777 == 0o600
    assert cursors.undelivered_count(db, 1, ["archive"]) == 0
    assert cursors.undelivered_count(db, 1, ["other"]) == 2


def test_signature_matches_svix_reference_vector() -> None:
    # The example from Svix's docs on manual verification.
    secret = SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, f"v1,bogus= {sig}")
    assert "Mf" not in repr(secret)
