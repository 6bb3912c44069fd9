"""The relay: take a batch of committed PENDING jobs, publish it, mark what the broker acked.

One batch is one transaction: the rows are locked while they are published, and marked
PUBLISHED only after the broker acknowledged each message, then committed. A crash anywhere
leaves them PENDING and they are published again with the same ``job_id`` (Redis drops the
copy itself; Kafka consumers find nothing to claim).

Batches run on one long-lived connection that also holds this relay's shard locks
(:mod:`relay.shards`): losing it aborts the batch and frees the shards together. Behind a
transaction-pooling proxy there is no session to hold them, so each batch locks its shards for
its own transaction instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from outbox import queries
from outbox.backoff import BackoffPolicy
from outbox.failpoints import failpoint
from outbox.wakeup import Waker
from relay.metrics import RelayMetrics
from relay.publisher import Delivery, OutgoingMessage, Publisher
from relay.routing import Router
from relay.shards import BatchShardLocks, ShardOwnership

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
        shard_count: int = 16,
        transaction_pooling: bool = False,
        rebalance_interval: float = 1.0,
        gauge_interval: float = 5.0,
        metrics: RelayMetrics | None = None,
        outage_backoff: BackoffPolicy = BackoffPolicy(base_seconds=0.5, cap_seconds=30.0),  # noqa: B008 - frozen
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._router = router
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._listen_conninfo = listen_conninfo
        self._rebalance_interval = rebalance_interval
        self._gauge_interval = gauge_interval
        self._outage_backoff = outage_backoff
        self.ownership = ShardOwnership(shard_count)
        self._batch_locks = BatchShardLocks(shard_count) if transaction_pooling else None
        self.metrics = metrics if metrics is not None else RelayMetrics()
        self._conn: Connection | None = None
        self._next_rebalance = 0.0
        self._next_gauges = 0.0
        self.last_loop = time.monotonic()
        """When the loop last went round (monotonic); a stalled loop fails the health probe."""
        self.stop_event = threading.Event()
        self.idle = threading.Event()
        """Set while the relay waits for work: the backlog it could see is published."""

    def run_once(self) -> BatchResult:
        """Rebalance shards if due, then publish one batch and mark what was acked, in one txn.

        Any error drops the connection, as a crash would: the batch rolls back, shards go free.
        """
        try:
            return self._run_once()
        except BaseException:
            self._drop_connection()
            raise

    def _run_once(self) -> BatchResult:
        conn = self._connection()
        if self._batch_locks is None and time.monotonic() >= self._next_rebalance:
            self.ownership.rebalance(conn)
            self.metrics.shards_owned.set(len(self.ownership.owned))
            self._next_rebalance = time.monotonic() + self._rebalance_interval
        started = time.perf_counter()
        with conn.begin():
            owned = self._shards_for_batch(conn)
            if not owned:
                return BatchResult(0, 0, 0)
            count = self.ownership.shard_count
            shards = None if len(owned) == count else (count, sorted(owned))
            rows = queries.fetch_relayable(conn, limit=self._batch_size, shards=shards)
            if not rows:
                return BatchResult(0, 0, 0)
            messages = [self._router.message_for(row) for row in rows]
            deliveries = self._publisher.publish(messages)
            failpoint("relay.after_publish")
            receipts = acked_in_key_order(messages, deliveries)
            queries.mark_published(conn, receipts)
            failpoint("relay.after_mark")
        failpoint("relay.after_commit")
        self._observe(rows, messages, receipts, time.perf_counter() - started)
        failed = len(rows) - len(receipts)
        if failed:
            # One line per batch: an outage would otherwise log every row of every retry.
            first_error = next((d.error for d in deliveries if not d.acked), None)
            context = {"failed": failed, "batch": len(rows), "error": first_error}
            log.warning("publish incomplete; unmarked jobs stay PENDING", extra=context)
        return BatchResult(len(rows), len(receipts), failed)

    def _shards_for_batch(self, conn: Connection) -> frozenset[int]:
        if self._batch_locks is None:
            return self.ownership.owned
        locked = self._batch_locks.lock_for_batch(conn)
        self.metrics.shards_owned.set(len(locked))
        return locked

    def _observe(
        self,
        rows: Sequence[queries.RelayRow],
        messages: Sequence[OutgoingMessage],
        receipts: Sequence[queries.PublishReceipt],
        seconds: float,
    ) -> None:
        self.metrics.batch_duration.observe(seconds)
        marked = {r.id for r in receipts}
        outcomes = Counter((m.topic, "acked" if m.id in marked else "failed") for m in messages)
        for (topic, outcome), count in outcomes.items():
            self.metrics.published.labels(topic, outcome).inc(count)
        now = datetime.now(UTC)
        for row in rows:
            if row.id in marked:
                self.metrics.commit_to_publish.observe(max(0.0, (now - row.due_at).total_seconds()))

    def refresh_gauges(self) -> None:
        """Oldest pending age and horizon delay: one scan of the due rows, outside any batch."""
        conn = self._connection()
        lag = queries.relay_lag(conn)
        conn.commit()
        self.metrics.oldest_pending_age.set(lag.oldest_pending_age_seconds)
        self.metrics.horizon_delay.set(lag.horizon_delay_seconds)

    def run(self) -> None:
        """Publish until :attr:`stop_event` is set; back off (bounded) on outages, never spin."""
        waker = Waker(self._listen_conninfo, queries.NOTIFY_CHANNEL, self.stop_event)
        # Also the longest a shard waits for a new owner: idle relays must rebalance too.
        idle_wait = min(self._poll_interval, self._rebalance_interval)
        failures = 0
        try:
            while not self.stop_event.is_set():
                self.last_loop = time.monotonic()
                self.metrics.loop_heartbeat.set_to_current_time()
                try:
                    result = self.run_once()
                    if time.monotonic() >= self._next_gauges:
                        self.refresh_gauges()
                        self._next_gauges = time.monotonic() + self._gauge_interval
                except sa.exc.DBAPIError:
                    log.warning("database unavailable; backing off", exc_info=True)
                    self._drop_connection()
                    result = BatchResult(0, 0, 1)
                failures = failures + 1 if result.failed else 0
                if failures:
                    self.stop_event.wait(self._outage_backoff.delay(failures).total_seconds())
                elif result.fetched < self._batch_size:
                    self.idle.set()
                    waker.wait(idle_wait)
                    self.idle.clear()
        finally:
            waker.close()
            self.close()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def health(self, stall_after: float) -> str | None:
        """None while the loop goes round; the reason once it has stalled for ``stall_after`` s."""
        stalled = time.monotonic() - self.last_loop
        return None if stalled < stall_after else f"relay loop stalled for {stalled:.0f} s"

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Give up the connection and with it every shard."""
        self._drop_connection()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        # Invalidate, never return it to the pool: a pooled session would keep the shard locks.
        if self._conn is not None:
            with suppress(Exception):
                self._conn.invalidate()
            with suppress(Exception):
                self._conn.close()
            self._conn = None
        self.ownership.forget()
        self.metrics.shards_owned.set(0)
        self._next_rebalance = 0.0


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
