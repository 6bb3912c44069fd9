"""The table as a source (``OUTBOX_BROKER=none``): claim due PENDING jobs straight from it.

No broker stands between enqueue and worker, so nothing needs acknowledging: the row is the
delivery. NOTIFY on enqueue wakes the loop; it polls anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from outbox import queries
from outbox.job_record import ClaimedJob, Lease
from worker.source import ClaimRequest, SourceRound


class TableSource:
    """Claims by the claim plan: one statement per limited type, one for the other types."""

    wakes_on_notify = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def start(self) -> None:
        pass

    def claim(self, request: ClaimRequest) -> SourceRound:
        """All groups in one transaction; ``more`` when a statement came back full."""
        if request.limit <= 0:
            return SourceRound([], more=False)
        claimed: list[ClaimedJob] = []
        more = False
        terms = request.terms
        with self._engine.begin() as conn:
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
        pass
