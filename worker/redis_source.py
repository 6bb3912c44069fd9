"""The Redis Streams source: a consumer group on the relay's streams (``OUTBOX_BROKER=redis``).

- The group is created with ``XGROUP CREATE ... 0 MKSTREAM`` when missing: from the start of the
  stream, so nothing published before the group existed is skipped (what is already done finds
  nothing to claim).
- ``XREADGROUP ... COUNT n BLOCK ms``: never more than the round has room for, and never blocked
  past the poll interval, so a stop is honoured within it.
- An entry is ``XACK``\\ ed only once its job's outcome is written (or at once when its job is
  not claimable, or of a type another group handles). An entry read by a consumer that died
  stays in the group's pending list; ``XAUTOCLAIM`` hands it to a live consumer once it has been
  idle for ``min_idle_seconds``. A live consumer keeps its own entries fresh (``XCLAIM ...
  JUSTID`` to itself every third of that), so slow jobs are not taken from it.

Only this worker module imports ``redis``; its errors become :class:`SourceUnavailable`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from sqlalchemy.engine import Engine

from outbox.job_record import Lease
from worker.delivery_claims import Delivery, DeliveryClaims, Position
from worker.source import ClaimRequest, SourceRound, SourceUnavailable

log = logging.getLogger(__name__)

Entry = tuple[str | None, dict[str, str] | None]


class RedisSource:
    """Reads ``streams`` as consumer ``consumer`` of ``group``; claims, then acks after outcome."""

    wakes_on_notify = False

    def __init__(
        self,
        engine: Engine,
        url: str,
        *,
        streams: Sequence[str],
        group: str,
        consumer: str,
        min_idle_seconds: float = 30.0,
        block_seconds: float = 1.0,
        max_waiting: int = 100,
        timeout_seconds: float = 10.0,
    ) -> None:
        if not streams:
            raise ValueError("no streams to read")
        self._claims = DeliveryClaims(engine, max_waiting=max_waiting)
        self._client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds + block_seconds,  # a blocked read is not a dead socket
        )  # fmt: skip
        self._streams = list(streams)
        self._group = group
        self._consumer = consumer
        self._min_idle_ms = max(1, int(min_idle_seconds * 1000))
        self._block_seconds = block_seconds
        self._cursors = dict.fromkeys(self._streams, "0-0")
        self._next_reclaim = 0.0
        self._next_keepalive = 0.0
        self._closed = False

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def start(self) -> None:
        """Create the group on every stream (from its start) unless it exists."""
        self._create_groups()
        log.info("reading Redis streams", extra={"streams": self._streams, "group": self._group})

    def _create_groups(self) -> None:
        for stream in self._streams:
            try:
                self._client.xgroup_create(stream, self._group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise SourceUnavailable(f"cannot create Redis consumer group: {exc}") from None
            except redis.RedisError as exc:
                raise SourceUnavailable(f"cannot reach Redis: {exc}") from None

    def claim(self, request: ClaimRequest) -> SourceRound:
        foreign: list[Delivery] = []  # of types handled elsewhere: acked without a claim
        try:
            more = self._fetch(request, foreign)
        except redis.RedisError as exc:
            if str(exc).startswith("NOGROUP"):
                # The stream or group is gone (a Redis restarted without persistence, a cleanup):
                # make it again, from the start of whatever the stream now holds.
                log.warning("consumer group missing; creating it again", extra={"error": str(exc)})
                self._create_groups()
            raise SourceUnavailable(f"Redis read failed: {exc}") from exc
        finally:
            self._ack(foreign)
        jobs, done = self._claims.claim(request)
        self._ack(done)
        return SourceRound(jobs, more=more)

    def _fetch(self, request: ClaimRequest, foreign: list[Delivery]) -> bool:
        """Take over idle entries, then read new ones, up to the room; True if worth going on."""
        self._keep_alive()
        room = self._claims.room_to_read(request.limit)
        if room <= 0:
            return False
        taken = self._reclaim(room)
        foreign += self._claims.receive(taken, request.handled)  # ours before the next call
        room = self._claims.room_to_read(request.limit)
        if room <= 0:
            return bool(taken)
        block = min(self._block_seconds, request.wait_seconds)
        foreign += self._claims.receive(self._read(room, block), request.handled)
        return True  # the read waited for work itself

    def acknowledge(self, leases: Sequence[Lease]) -> None:
        self._ack(self._claims.settle(leases))

    def stop(self) -> None:
        """Leave the group if nothing of ours is pending in it; close the connections."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._claims.in_hand():
                for stream in self._streams:
                    self._forget_consumer_if_idle(stream)
        except redis.RedisError:
            log.warning("could not remove this consumer from the group", exc_info=True)
        self._client.close()
        self._claims.close()

    # --- reads ---------------------------------------------------------------------------------

    def _read(self, count: int, block_seconds: float) -> list[Delivery]:
        # COUNT applies per stream: several streams may return more than asked; the extra wait.
        reply: Any = self._client.xreadgroup(
            self._group, self._consumer, dict.fromkeys(self._streams, ">"),
            count=count, block=max(1, int(block_seconds * 1000)),
        )  # fmt: skip
        streams = reply.items() if isinstance(reply, dict) else reply or []  # RESP3, RESP2
        return [d for stream, entries in streams for d in self._deliveries(stream, entries)]

    def _reclaim(self, room: int) -> list[Delivery]:
        """Entries idle past ``min_idle`` in any consumer's pending list: their reader died."""
        if time.monotonic() < self._next_reclaim:
            return []
        self._next_reclaim = time.monotonic() + self._min_idle_ms / 2000
        found: list[Delivery] = []
        for stream in self._streams:
            reply: list[Any] = self._client.xautoclaim(
                stream, self._group, self._consumer, min_idle_time=self._min_idle_ms,
                start_id=self._cursors[stream], count=room - len(found),
            )  # fmt: skip
            self._cursors[stream], entries = str(reply[0]), list(reply[1])
            if any(entry_id is None for entry_id, _ in entries):
                self._ack_trimmed(stream, known={e for e, _ in entries if e is not None})
            taken = self._deliveries(stream, entries)
            if taken:
                log.warning("entries of a silent consumer taken over", extra={"n": len(taken)})
            found += taken
            if len(found) >= room:
                self._next_reclaim = 0.0  # there may be more: look again next round
                break
        return found

    def _deliveries(self, stream: str, entries: Iterable[Entry]) -> list[Delivery]:
        deliveries, broken = [], []
        for entry_id, fields in entries:
            if entry_id is None:
                continue
            if not fields or not fields.get("job_id") or not fields.get("type"):
                broken.append((stream, entry_id))
                continue
            deliveries.append(Delivery(fields["job_id"], fields["type"], (stream, entry_id)))
        if broken:
            log.error("stream entries without job_id or type; acked", extra={"entries": broken})
            self._ack_positions(broken)
        return deliveries

    def _keep_alive(self) -> None:
        """Reset the idle time of every entry in hand, so no live consumer's entry is taken."""
        if time.monotonic() < self._next_keepalive:
            return
        self._next_keepalive = time.monotonic() + self._min_idle_ms / 3000
        by_stream = _by_stream(d.position for d in self._claims.in_hand())
        for stream, ids in by_stream.items():
            self._client.xclaim(stream, self._group, self._consumer, 0, ids, justid=True)

    def _ack_trimmed(self, stream: str, known: set[str]) -> None:
        # Redis 6.2 answers an entry trimmed from the stream as (nil, nil) and leaves it pending:
        # find it among ours by id, check it is gone, and ack it (Redis 7 does this itself).
        in_hand = {d.position[1] for d in self._claims.in_hand()}
        ours = self._client.xpending_range(
            stream, self._group, "-", "+", 1000, consumername=self._consumer
        )
        orphans = [p["message_id"] for p in ours if p["message_id"] not in in_hand | known]
        gone = [i for i in orphans if not self._client.xrange(stream, i, i)]
        if gone:
            log.error("entries trimmed before they were processed; acked", extra={"ids": gone})
            self._client.xack(stream, self._group, *gone)

    # --- acks ----------------------------------------------------------------------------------

    def _ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._ack_positions([d.position for d in deliveries])

    def _ack_positions(self, positions: Iterable[Position]) -> None:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for stream, ids in _by_stream(positions).items():
                    pipe.xack(stream, self._group, *ids)
                pipe.execute()
        except redis.RedisError:
            # Not lost: the entries stay pending, are taken over later, and find nothing to claim.
            log.warning("XACK failed; the entries will be delivered again", exc_info=True)

    def _forget_consumer_if_idle(self, stream: str) -> None:
        pending = self._client.xpending_range(
            stream, self._group, "-", "+", 1, consumername=self._consumer
        )
        if not pending:
            self._client.xgroup_delconsumer(stream, self._group, self._consumer)


def _by_stream(positions: Iterable[Position]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for position in positions:
        grouped[position[0]].append(position[1])
    return grouped
