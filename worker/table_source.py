"""The table as a source (``OUTBOX_BROKER=none``): claim due PENDING jobs straight from it.

No broker stands between enqueue and worker, so nothing needs acknowledging: the row is the
delivery. NOTIFY on enqueue wakes the loop; it polls anyway. A claim of one statement (the
usual case: no type at a limit) runs in autocommit on a connection the source holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from outbox import queries
from outbox.database import HeldConnection
from outbox.job_record import ClaimedJob, Lease
from worker.source import ClaimRequest, SourceRound


class TableSource:
    """Claims by the claim plan: one statement per limited type, one for the other types."""

    wakes_on_notify = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection = HeldConnection(engine)

    def start(self) -> None:
        pass

    def claim(self, request: ClaimRequest) -> SourceRound:
        """One statement per group, one transaction; ``more`` when one came back full."""
        if request.limit <= 0:
            return SourceRound([], more=False)
        claimed: list[ClaimedJob] = []
        more = False
        terms = request.terms
        # Several groups share one transaction: a failure part-way must not strand the jobs
        # an earlier statement claimed (they would wait out their leases).
        single = len(request.groups) == 1
        with self._connection.use() if single else self._engine.begin() as conn:
            for group in request.groups:
                limit = int(min(group.cap, request.limit - len(claimed)))
                if limit <= 0:
                    more = True
                    break
                batch = queries.claim_batch(
                    conn, worker_id=terms.worker_id, limit=limit, lease=terms.lease,
                    default_max_attempts=terms.default_max_attempts,
                    max_attempts_by_type=terms.max_attempts_by_type,
                    types=group.types, exclude_types=group.exclude_types, now=request.now,
                )  # fmt: skip
                claimed += batch
                more = more or len(batch) == limit
        return SourceRound(claimed, more)

    def acknowledge(self, leases: Sequence[Lease]) -> None:
        pass

    def stop(self) -> None:
        self._connection.close()
