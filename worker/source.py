"""Where a worker's jobs come from: the table itself, or a broker's deliveries (the seam).

The worker loop asks its source for up to N jobs (:meth:`JobSource.claim`), runs them exactly
as it would any claim, and tells the source once each job's outcome is in the database
(:meth:`JobSource.acknowledge`), so a broker source acks or commits a delivery only when the
row no longer needs it. A claim is always one guarded statement on the rows, whatever the
source: a delivery is only a hint that a job may be claimable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from outbox.errors import OutboxError
from outbox.job_record import ClaimedJob, Lease
from worker.claim_plan import ClaimGroup


class SourceUnavailable(OutboxError):
    """The broker cannot be reached or refused a read; the loop backs off and tries again."""


@dataclass(frozen=True)
class ClaimTerms:
    """What every claim of one worker writes on the rows it takes."""

    worker_id: str
    lease: timedelta
    default_max_attempts: int
    max_attempts_by_type: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimRequest:
    """One round's room: at most ``limit`` jobs, each type within its ``groups`` cap.

    ``handled`` are the types with a handler here (a type missing from every group has no room
    this round); ``wait_seconds`` is the longest a source may block waiting for work.
    """

    limit: int
    groups: Sequence[ClaimGroup]
    handled: frozenset[str]
    terms: ClaimTerms
    now: datetime | None = None
    wait_seconds: float = 1.0


@dataclass(frozen=True)
class SourceRound:
    """The jobs claimed in one round; ``more``: ask again at once rather than wait for a wake."""

    jobs: list[ClaimedJob]
    more: bool


class JobSource(Protocol):
    """The source of a worker's jobs. ``claim`` runs on the loop's thread only;
    ``acknowledge`` may come from any thread."""

    @property
    def wakes_on_notify(self) -> bool:
        """True when NOTIFY on the outbox channel means work for this source (the table)."""
        ...

    def start(self) -> None:
        """Connect (raise :class:`SourceUnavailable` when the broker cannot be reached)."""
        ...

    def claim(self, request: ClaimRequest) -> SourceRound:
        """Claim up to ``request.limit`` jobs in one transaction; may block up to its wait."""
        ...

    def acknowledge(self, leases: Sequence[Lease]) -> None:
        """The outcomes of the jobs claimed under ``leases`` are written: their deliveries are
        no longer needed (given back, rescued and finished jobs alike are published anew)."""
        ...

    def stop(self) -> None:
        """Acknowledge what is done and disconnect; safe to call twice."""
        ...
