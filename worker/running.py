"""The jobs a worker has in hand, from dispatch until their thread is back and outcome written.

The *busy* ones, whose handler has not returned, are the worker's used capacity (with short
handlers, some are claimed ahead and wait for a thread: :mod:`worker.claim_pace`): a thread freed
takes the next job while the outcome writer still writes the last ones, so claiming and writing
overlap instead of taking turns. The jobs in hand stay bounded all the same (the loop claims no
more than three times its concurrency in hand: :mod:`worker.claim_pace`). A job is *settled*
once: by its handler's return, by the timeout watchdog, or by shutdown giving it back, whichever
comes first; the others find it settled and drop what they had (the lease token would fence
them anyway).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from outbox.job_record import Lease
from worker.handlers import HandlerSpec
from worker.job import Job


@dataclass(eq=False)
class RunningJob:
    """One job in hand. Flags change only under :class:`RunningJobs`' lock."""

    job: Job
    spec: HandlerSpec
    lease: Lease
    since: datetime | None = None  # published_at, else created_at (the metrics' latency start)
    traced: bool = False  # a tracer provider was configured when the job was claimed
    started: float = field(default_factory=time.monotonic)  # dispatched, then: its handler began
    settled: bool = False  # an outcome was accepted for it
    written: bool = False  # that outcome is in the database: the lease is no longer ours
    returned: bool = False  # the handler's thread came back
    lost: bool = False  # the heartbeat found the lease taken away
    # An async handler's: cancels its task, from any thread (a thread cannot be interrupted).
    interrupt: Callable[[], object] | None = None

    def cancel(self) -> None:
        """The worker no longer wants this attempt: set ``job.cancelled``, and interrupt an
        async handler at its next ``await``."""
        self.job.cancelled.set()
        if self.interrupt is not None:
            self.interrupt()


class RunningJobs:
    """Thread-safe set of :class:`RunningJob`, keyed by lease token."""

    def __init__(self, on_free: Callable[[], None]) -> None:
        self._on_free = on_free
        # A plain lock: nothing here re-enters, and every job takes it twice from its thread.
        self._changed = threading.Condition(threading.Lock())
        self._jobs: dict[str, RunningJob] = {}
        self._busy = 0
        self._peak = 0

    def add_all(self, started: Iterable[RunningJob]) -> None:
        with self._changed:
            for running in started:
                self._jobs[running.lease.lease_token] = running
                self._busy += 1
            self._peak = max(self._peak, self._busy)

    def settle(self, running: RunningJob, report: Callable[[], None]) -> bool:
        """Report this job's outcome with ``report`` unless someone already did; False then.

        ``report`` runs under the lock (it only queues), so once :meth:`settle_the_rest` has
        returned, every outcome reported before it is queued: stopping the writer next loses none.
        """
        with self._changed:
            if running.settled:
                return False
            running.settled = True
            report()
            return True

    def start(self, running: RunningJob) -> bool:
        """A thread takes this job: False when it was settled meanwhile (given back at shutdown),
        so its handler must not run; the thread still calls :meth:`returned`.

        Without the lock, which every job took here: it would order nothing more. Shutdown
        settles a job whether or not a thread has just started it (it cancels those), and an
        outcome reported after that is discarded by :meth:`finish`, under the lock.
        """
        if running.settled:
            return False
        running.started = time.monotonic()
        return True

    def returned(self, running: RunningJob) -> None:
        with self._changed:
            self._returned(running)

    def finish(self, running: RunningJob, report: Callable[[], None]) -> bool:
        """The handler returned: :meth:`settle` and :meth:`returned` under one hold of the lock
        (every job passes here; the lock is shared by every thread of the worker)."""
        with self._changed:
            try:
                if running.settled:
                    return False
                running.settled = True
                report()
                return True
            finally:
                self._returned(running)

    def _returned(self, running: RunningJob) -> None:
        running.returned = True
        self._busy -= 1
        self._free_if_done(running)
        self._on_free()  # the thread is free for the next job

    def written(self, leases: Iterable[Lease]) -> None:
        """These jobs' outcomes are written (or given up on): their leases are no longer ours."""
        with self._changed:
            freed = False
            for lease in leases:
                running = self._jobs.get(lease.lease_token)
                if running is not None:
                    running.written = True
                    freed = self._free_if_done(running) or freed
            if freed:  # once per batch: every wake-up costs the loop a round
                self._on_free()

    def _free_if_done(self, running: RunningJob) -> bool:
        # A thread still inside a timed-out handler keeps its slot: threads stay bounded.
        if running.returned and running.written:
            del self._jobs[running.lease.lease_token]
            if not self._jobs:  # the one wait (wait_until_empty) waits for none in hand
                self._changed.notify_all()
            return True
        return False

    def count(self) -> int:
        """Jobs in hand: busy, or returned with their outcome not yet written."""
        with self._changed:
            return len(self._jobs)

    def busy(self) -> int:
        """Jobs whose handler has not returned: the handler threads in use."""
        with self._changed:
            return self._busy

    def take_peak(self) -> int:
        """The most busy jobs at once since the last call (or the start); starts a new period."""
        with self._changed:
            peak, self._peak = max(self._peak, self._busy), self._busy
            return peak

    def count_by_type(self) -> Counter[str]:
        """Busy jobs per type (a type's concurrency limit counts handlers running)."""
        with self._changed:
            return Counter(r.job.type for r in self._jobs.values() if not r.returned)

    def leases_held(self) -> list[Lease]:
        """Leases the heartbeat should extend: outcome not yet written, lease not lost."""
        with self._changed:
            return [r.lease for r in self._jobs.values() if not (r.written or r.lost)]

    def mark_lost(self, leases: list[Lease]) -> list[RunningJob]:
        """The heartbeat could not extend these: cancel the ones whose outcome is not written."""
        lost = []
        with self._changed:
            for lease in leases:
                running = self._jobs.get(lease.lease_token)
                if running is not None and not running.written:
                    running.lost = True
                    running.cancel()
                    lost.append(running)
        return lost

    def find(self, lease: Lease) -> RunningJob | None:
        with self._changed:
            return self._jobs.get(lease.lease_token)

    def wait_until_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._jobs and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return not self._jobs

    def settle_the_rest(self) -> list[RunningJob]:
        """Shutdown: settle every job still unsettled and cancel it; the caller gives them back."""
        with self._changed:
            rest = [r for r in self._jobs.values() if not r.settled]
            for running in rest:
                running.settled = True
                running.cancel()
        return rest
