"""What a broker source does with deliveries, whatever the broker: admit, claim, settle.

A delivery names a job; the row decides. Deliveries of the types this worker handles wait until
the round has room for their type (free threads, a type's concurrency cap, whole rate-limit
tokens; the same claim plan the table source follows), then are claimed in one statement
(:func:`outbox.queries.claim_by_job_ids`). A delivery is *done*, to be acked or committed:

- at once, when its job was not claimable: a duplicate, or a job already taken, finished or
  cancelled, or moved on to a later attempt that is not due yet (a stale delivery);
- at once, when no handler here knows its type: a consumer group is one set of handlers, and
  other types on the same topic belong to another group (see the README, "The worker");
- otherwise when the outcome of the job it claimed is written (:meth:`DeliveryClaims.settle`).

Whatever a delivery's ``attempt`` says, the claim takes the job only if its row is PUBLISHED, or
PENDING and due, so a stale delivery of an older attempt runs at most the attempt that is due
anyway, and the later delivery of that attempt then finds nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from outbox import queries
from outbox.database import HeldConnection
from outbox.job_record import ClaimedJob, Lease
from worker.source import ClaimRequest

log = logging.getLogger(__name__)

Position = tuple[str, str] | tuple[str, int, int]
"""Where a message sits. Redis: (stream, entry id); Kafka: (topic, partition, offset)."""


@dataclass(frozen=True)
class Delivery:
    """One message a broker handed this worker: the job it names, and where the message sits."""

    job_id: str
    type: str
    position: Position


def admit(
    waiting: Sequence[Delivery], request: ClaimRequest
) -> tuple[list[Delivery], list[Delivery]]:
    """Split ``waiting``, in order, into what this round has room for and what still waits."""
    group_of: dict[str, int] = {}
    for index, group in enumerate(request.groups):
        types = group.types if group.types is not None else request.handled
        for job_type in types:
            if job_type not in group.exclude_types:
                group_of.setdefault(job_type, index)
    left = [group.cap for group in request.groups]
    admitted: list[Delivery] = []
    rest: list[Delivery] = []
    for delivery in waiting:
        room = group_of.get(delivery.type)
        if room is not None and left[room] >= 1 and len(admitted) < request.limit:
            admitted.append(delivery)
            left[room] -= 1
        else:
            rest.append(delivery)
    return admitted, rest


class DeliveryClaims:
    """Deliveries from read to done. ``claim`` runs on the loop's thread; ``settle`` on any."""

    def __init__(self, engine: Engine, *, max_waiting: int = 100) -> None:
        self._connection = HeldConnection(engine)  # one claim statement: autocommit on it
        self._max_waiting = max_waiting
        self._waiting: list[Delivery] = []  # handled types, no room yet: neither claimed nor done
        self._lock = threading.Lock()
        self._claimed: dict[str, Delivery] = {}  # lease token -> the delivery it came by
        self._foreign_types: set[str] = set()

    def room_to_read(self, limit: int) -> int:
        """How many deliveries to read now: the round's room, less those already waiting."""
        return max(0, min(limit, self._max_waiting) - len(self._waiting))

    def room_to_buffer(self) -> int:
        """How many deliveries may be read ahead of free capacity, to wait here unclaimed."""
        return max(0, self._max_waiting - len(self._waiting))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def receive(self, fresh: Sequence[Delivery], handled: frozenset[str]) -> list[Delivery]:
        """Take in what was just read; return the deliveries done at once (no handler here)."""
        fresh = self._unseen(fresh)
        foreign = [d for d in fresh if d.type not in handled]
        self._note_foreign(foreign)
        self._waiting += [d for d in fresh if d.type in handled]
        return foreign

    def claim(self, request: ClaimRequest) -> tuple[list[ClaimedJob], list[Delivery]]:
        """Claim what the round has room for, in one statement.

        Returns the jobs claimed and the deliveries done at once (their jobs were not
        claimable). If the claim raises, the admitted deliveries wait again: none is lost, and
        none is done before its row decided.
        """
        admitted, self._waiting = admit(self._waiting, request)
        if not admitted:
            return [], []
        try:
            jobs = self._claim_rows(admitted, request)
        except BaseException:
            self._waiting = [*admitted, *self._waiting]
            raise
        by_job_id = {job.job_id: job for job in jobs}
        done = []
        with self._lock:
            for delivery in admitted:
                job = by_job_id.pop(delivery.job_id, None)
                if job is None:  # not claimable, or a second copy in this very read
                    done.append(delivery)
                else:
                    self._claimed[job.lease_token] = delivery
        return jobs, done

    def _unseen(self, fresh: Sequence[Delivery]) -> list[Delivery]:
        # The same message read again while in hand (Kafka re-fetches after a pause; Redis hands
        # back an entry of ours that went idle) is not a second delivery: finishing the copy
        # must not count the original as done while its job still runs.
        seen = {d.position for d in self.in_hand()}
        unseen = []
        for delivery in fresh:
            if delivery.position not in seen:
                seen.add(delivery.position)
                unseen.append(delivery)
        return unseen

    def _claim_rows(self, admitted: list[Delivery], request: ClaimRequest) -> list[ClaimedJob]:
        terms = request.terms
        job_ids = list(dict.fromkeys(d.job_id for d in admitted))
        with self._connection.use() as conn:
            return queries.claim_by_job_ids(
                conn, job_ids=job_ids, worker_id=terms.worker_id, lease=terms.lease,
                default_max_attempts=terms.default_max_attempts,
                max_attempts_by_type=terms.max_attempts_by_type, now=request.now,
            )  # fmt: skip

    def close(self) -> None:
        """Give the held connection back (the source is stopping)."""
        self._connection.close()

    def settle(self, leases: Sequence[Lease]) -> list[Delivery]:
        """The deliveries of these jobs, whose outcomes are written: they are done now."""
        with self._lock:
            return [
                delivery
                for lease in leases
                if (delivery := self._claimed.pop(lease.lease_token, None)) is not None
            ]

    def in_hand(self) -> list[Delivery]:
        """Every delivery read and not yet done: waiting, or its job running here."""
        with self._lock:
            return [*self._waiting, *self._claimed.values()]

    def forget_waiting(self, gone: Callable[[Delivery], bool]) -> None:
        """Drop waiting deliveries no longer this worker's to claim (Kafka: a revoked partition).

        Deliveries whose jobs run here stay: when the partition comes back, a re-read of their
        messages is recognised as a copy, and their outcomes still count them done.
        """
        self._waiting = [d for d in self._waiting if not gone(d)]

    def _note_foreign(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.type not in self._foreign_types:
                self._foreign_types.add(delivery.type)
                log.warning(
                    "delivery of a type with no handler here; done without claiming (a worker "
                    "group handling it must consume this topic)",
                    extra={"type": delivery.type, "job_id": delivery.job_id},
                )
