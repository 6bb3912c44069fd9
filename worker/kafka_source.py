"""The Kafka source: a consumer in a group on the relay's topics (``OUTBOX_BROKER=kafka``).

Offsets are committed by hand, and only behind finished work: per partition, up to the oldest
message whose job's outcome is not yet written (:mod:`worker.partition_offsets`). A worker that
dies loses nothing: the group resumes the partition at the last commit, and every message
already done finds nothing to claim. On a revoke the done offsets are committed first.
``auto.offset.reset=earliest``: a new group starts at the beginning of each partition, so
nothing published before it existed is skipped.

Messages are read ahead of free capacity into a bounded buffer (``max_waiting``). When it has
been full for a few seconds, the assigned partitions are paused (the consumer keeps polling, so
it stays in the group and serves rebalances) rather than read into an unbounded buffer.
Only this worker module imports ``confluent_kafka``; its errors become :class:`SourceUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from sqlalchemy.engine import Engine

from outbox.job_record import Lease
from worker.delivery_claims import Delivery, DeliveryClaims
from worker.partition_offsets import PartitionOffsets
from worker.partition_offsets import TopicPartition as TP
from worker.source import ClaimRequest, SourceRound, SourceUnavailable

log = logging.getLogger(__name__)

# What "commit only behind finished work" rests on; configuration cannot change it.
REQUIRED_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
}


# A buffer full for this long means slow handlers: pause the partitions then, so the consumer
# keeps polling (and stays in the group) without fetching. Shorter stalls keep the prefetch.
PAUSE_AFTER_SECONDS = 5.0


class KafkaSource:
    """Consumes ``topics`` in ``group``; claims each delivery, commits behind the outcomes."""

    wakes_on_notify = False

    def __init__(
        self,
        engine: Engine,
        bootstrap_servers: str,
        *,
        topics: Sequence[str],
        group: str,
        extra_config: Mapping[str, Any] | None = None,
        block_seconds: float = 1.0,
        max_waiting: int = 100,
    ) -> None:
        if not topics:
            raise ValueError("no topics to read")
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            **(extra_config or {}),
            **REQUIRED_CONFIG,
        }
        self._topics = list(topics)
        self._block_seconds = block_seconds
        self._claims = DeliveryClaims(engine, max_waiting=max_waiting)
        self._offsets = PartitionOffsets()
        self._consumer: Consumer | None = None
        self._paused = False
        self._full_since: float | None = None
        self._assignment_lock = threading.Lock()
        self._assignment: set[TP] = set()

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    def start(self) -> None:
        try:
            self._consumer = Consumer(self._config)
            self._consumer.subscribe(
                self._topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
        except KafkaException as exc:
            raise SourceUnavailable(f"cannot start the Kafka consumer: {exc}") from None
        log.info("reading Kafka topics", extra={"topics": self._topics,
                                                "group": self._config["group.id"]})  # fmt: skip

    def claim(self, request: ClaimRequest) -> SourceRound:
        consumer = self._running()
        # Read ahead of free capacity into the waiting buffer: pausing whenever every slot is
        # busy throws librdkafka's prefetched messages away, and each resume then costs a fetch
        # round trip (about 0.4 s with tansu: 250 jobs/s). Pause only when the buffer is full.
        room = self._claims.room_to_buffer()
        if room > 0:
            self._full_since = None
        # Block for work only when a claim could use it and nothing waits to be claimed.
        blocks = request.limit > 0 and self._claims.waiting == 0
        try:
            if room > 0:
                self._pause(consumer, False)
                wait = min(self._block_seconds, request.wait_seconds) if blocks else 0.0
                messages = self._read(consumer, room, wait)
            elif self._full_for() < PAUSE_AFTER_SECONDS:
                messages = []  # a slot frees soon and takes from the buffer; keep the prefetch
            else:  # full for long: stay in the group and serve rebalances, fetch nothing
                self._pause(consumer, True)
                messages = consumer.consume(num_messages=1, timeout=0)
        except KafkaException as exc:
            raise SourceUnavailable(f"Kafka read failed: {exc}") from exc
        self._done(self._claims.receive(self._deliveries(messages), request.handled))
        jobs, done = self._claims.claim(request)
        self._done(done)
        self._commit(consumer)
        # Again at once after a read that waited for work, or a claim that found some.
        return SourceRound(jobs, more=(room > 0 and blocks) or bool(jobs))

    def _full_for(self) -> float:
        """Seconds the buffer has been full, counted from the first round that found it so."""
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        return now - self._full_since

    @staticmethod
    def _read(consumer: Consumer, room: int, wait: float) -> list[Message]:
        # consume(n, timeout) returns only once n messages arrived or the timeout passed, so one
        # blocking call for a full round would hold ready messages back for up to the timeout.
        # Take what is fetched already; block for the first message only when there is none.
        messages = consumer.consume(num_messages=room, timeout=0)
        if messages or wait <= 0:
            return messages
        messages = consumer.consume(num_messages=1, timeout=wait)
        if messages and room > 1:
            messages += consumer.consume(num_messages=room - 1, timeout=0)
        return messages

    def acknowledge(self, leases: Sequence[Lease]) -> None:
        # Any thread: only the bookkeeping here; the loop commits in its next round.
        self._done(self._claims.settle(leases))

    def stop(self) -> None:
        """Commit what is done and leave the group; safe to call twice."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._claims.close()
        self._commit(consumer)
        try:
            consumer.close()
        except KafkaException:
            log.warning("Kafka consumer did not close cleanly", exc_info=True)

    def assigned(self) -> list[TP]:
        """The partitions this consumer holds now (empty before it joined the group).

        From the rebalance callbacks, so any thread may ask without touching the consumer.
        """
        with self._assignment_lock:
            return sorted(self._assignment)

    # --- messages and offsets ------------------------------------------------------------------

    def _deliveries(self, messages: Sequence[Message]) -> list[Delivery]:
        deliveries = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue  # not a message from a partition: nothing to track or claim
            self._offsets.read(topic, partition, offset)
            headers = _headers(message)
            if not headers.get("job_id") or not headers.get("type"):
                where = {"topic": topic, "partition": partition, "offset": offset}
                log.error("message without job_id or type header; skipped", extra=where)
                self._offsets.done(topic, partition, offset)
                continue
            position = (topic, partition, offset)
            deliveries.append(Delivery(headers["job_id"], headers["type"], position))
        return deliveries

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise SourceUnavailable(f"Kafka consumer failed: {error}")
        log.warning("Kafka consumer error", extra={"error": str(error)})

    def _done(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            position = delivery.position
            if len(position) == 3:
                self._offsets.done(*position)

    def _commit(self, consumer: Consumer, only: set[TP] | None = None) -> None:
        positions = self._offsets.committable(only)
        if not positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            answers = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Kept in the bookkeeping: the next round commits it, or a later offset covers it.
            log.warning("offset commit failed; trying again", extra={"error": str(exc)})
            return
        failed = {(a.topic, a.partition) for a in answers or [] if a.error is not None}
        self._offsets.committed({tp: o for tp, o in positions.items() if tp not in failed})

    def _pause(self, consumer: Consumer, pause: bool) -> None:
        assignment = consumer.assignment()
        if pause and assignment:
            consumer.pause(assignment)  # again each round: a rebalance hands out unpaused ones
        elif not pause and self._paused and assignment:
            consumer.resume(assignment)
        self._paused = pause

    # --- rebalances (called inside consume, on the loop's thread) ------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._assignment_lock:
            self._assignment |= {(p.topic, p.partition) for p in partitions}
        log.info("partitions assigned", extra={"partitions": _names(partitions)})

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._commit(consumer, only=gone)
        self._forget(gone)
        log.info("partitions revoked", extra={"partitions": _names(partitions)})

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget({(p.topic, p.partition) for p in partitions})
        log.warning("partitions lost", extra={"partitions": _names(partitions)})

    def _forget(self, gone: set[TP]) -> None:
        # Their next owner resumes at the last commit. Jobs running here still finish here; read
        # again elsewhere, their messages find nothing to claim (and their leases cover a crash).
        with self._assignment_lock:
            self._assignment -= gone
        self._offsets.forget(gone)
        self._claims.forget_waiting(lambda d: (d.position[0], d.position[1]) in gone)

    def _running(self) -> Consumer:
        if self._consumer is None:
            raise SourceUnavailable("the Kafka source is not started")
        return self._consumer


def _headers(message: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    headers = message.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if value is not None:
            found[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
    return found


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
