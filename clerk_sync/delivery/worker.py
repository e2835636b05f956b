"""Moves events from the outbox to the sinks, in sequence order per (sink, tenant).

Ordering beats throughput here: a consumer building memory from ``user.created`` then
``organizationMembership.created`` must not see them reversed, so a failing event holds back the
later events of the same tenant for that sink (other tenants and sinks go on). Retries follow
Svix's schedule, then keep trying every 10 hours: an event is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from clerk_sync.delivery.sinks import DeliveryError, Sink
from clerk_sync.logs import log
from clerk_sync.store import sinks as cursors
from clerk_sync.store.db import Database

logger = logging.getLogger("clerk_sync.delivery")

RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
"""Svix's schedule after the immediate first try; the last step repeats forever."""

DISABLED_RETRY_S = 3600.0
"""A receiver that answered 410 is asked again only this rarely."""


def backoff_s(attempts: int) -> float:
    """Delay before attempt ``attempts + 1`` (attempts counts failures so far, >= 1)."""
    return RETRY_SCHEDULE_S[min(attempts, len(RETRY_SCHEDULE_S)) - 1]


@dataclass
class DeliveryReport:
    """What one ``deliver_once`` round did."""

    delivered: int = 0
    failed: int = 0
    waiting: int = 0


class Deliverer:
    """Delivers pending events of every tenant to every sink."""

    def __init__(
        self,
        db: Database,
        sinks: list[Sink],
        *,
        batch_size: int = 100,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.db = db
        self.sinks = sinks
        self.batch_size = batch_size
        self.clock_ms = clock_ms

    async def deliver_once(self) -> DeliveryReport:
        """One round over all sinks and tenants; returns counts."""
        report = DeliveryReport()
        await asyncio.gather(*(self._deliver_sink(sink, report) for sink in self.sinks))
        return report

    async def _deliver_sink(self, sink: Sink, report: DeliveryReport) -> None:
        streams = await asyncio.to_thread(cursors.pending_streams, self.db, sink.name)
        for stream in streams:
            if stream.next_attempt_ms > self.clock_ms():
                report.waiting += 1
                continue
            events = await asyncio.to_thread(
                cursors.read_events, self.db, stream.tenant_id, stream.delivered_seq, self.batch_size
            )
            attempts = stream.attempts
            for event in events:
                try:
                    await sink.send(event)
                except DeliveryError as exc:
                    attempts += 1
                    wait_s = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(attempts)
                    if exc.disabled:
                        wait_s = max(wait_s, DISABLED_RETRY_S)
                    await asyncio.to_thread(
                        cursors.mark_failed,
                        self.db,
                        sink.name,
                        stream.tenant_id,
                        attempts,
                        self.clock_ms() + int(wait_s * 1000),
                        str(exc),
                    )
                    log(
                        logger,
                        "delivery.failed",
                        logging.WARNING,
                        sink=sink.name,
                        tenant=stream.tenant,
                        sequence=event.sequence,
                        attempts=attempts,
                        retry_in_s=wait_s,
                        error=str(exc),
                    )
                    report.failed += 1
                    break
                await asyncio.to_thread(
                    cursors.mark_delivered, self.db, sink.name, stream.tenant_id, event.sequence
                )
                attempts = 0
                report.delivered += 1

    async def aclose(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            await sink.aclose()
