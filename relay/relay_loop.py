"""The relay: take a batch of committed PENDING jobs, publish it, mark what the broker acked.

One batch is one transaction: the rows are locked while they are published, and marked
PUBLISHED only after the broker acknowledged each message, then committed. A crash anywhere
leaves them PENDING and they are published again with the same ``job_id`` (Redis drops the
copy itself; Kafka consumers find nothing to claim).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import queries
from outbox.backoff import BackoffPolicy
from outbox.wakeup import Waker
from relay.publisher import Delivery, OutgoingMessage, Publisher
from relay.routing import Router

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """What one ``run_once`` did."""

    fetched: int
    published: int
    failed: int


class Relay:
    """Publishes batches until stopped; ``run_once`` is one batch, for tests and the loop alike."""

    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        router: Router,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        listen_conninfo: str | None = None,
        outage_backoff: BackoffPolicy = BackoffPolicy(base_seconds=0.5, cap_seconds=30.0),  # noqa: B008 - frozen
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._router = router
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._listen_conninfo = listen_conninfo
        self._outage_backoff = outage_backoff
        self.stop_event = threading.Event()
        self.idle = threading.Event()
        """Set while the relay waits for work: the backlog it could see is published."""

    def run_once(self) -> BatchResult:
        """Publish one batch and mark what was acked, in one transaction."""
        with self._engine.begin() as conn:
            rows = queries.fetch_relayable(conn, limit=self._batch_size)
            if not rows:
                return BatchResult(0, 0, 0)
            messages = [self._router.message_for(row) for row in rows]
            deliveries = self._publisher.publish(messages)
            receipts = acked_in_key_order(messages, deliveries)
            queries.mark_published(conn, receipts)
        failed = len(rows) - len(receipts)
        if failed:
            # One line per batch: an outage would otherwise log every row of every retry.
            first_error = next((d.error for d in deliveries if not d.acked), None)
            context = {"failed": failed, "batch": len(rows), "error": first_error}
            log.warning("publish incomplete; unmarked jobs stay PENDING", extra=context)
        return BatchResult(len(rows), len(receipts), failed)

    def run(self) -> None:
        """Publish until :attr:`stop_event` is set; back off (bounded) on outages, never spin."""
        waker = Waker(self._listen_conninfo, queries.NOTIFY_CHANNEL, self.stop_event)
        failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    result = self.run_once()
                except sa.exc.OperationalError:
                    log.warning("database unavailable; backing off", exc_info=True)
                    result = BatchResult(0, 0, 1)
                failures = failures + 1 if result.failed else 0
                if failures:
                    self.stop_event.wait(self._outage_backoff.delay(failures).total_seconds())
                elif result.fetched < self._batch_size:
                    self.idle.set()
                    waker.wait(self._poll_interval)
                    self.idle.clear()
        finally:
            waker.close()

    def stop(self) -> None:
        self.stop_event.set()


def acked_in_key_order(
    messages: Sequence[OutgoingMessage], deliveries: Sequence[Delivery]
) -> list[queries.PublishReceipt]:
    """Receipts to mark: acked messages, except those after a failed one of the same key.

    Marking a later job of a key whose earlier job failed would let the later one run first.
    """
    blocked: set[str] = set()
    receipts = []
    for message, delivery in zip(messages, deliveries, strict=True):
        if delivery.receipt is None or message.key in blocked:
            blocked.add(message.key)
            continue
        receipts.append(queries.PublishReceipt(message.id, delivery.receipt))
    return receipts
