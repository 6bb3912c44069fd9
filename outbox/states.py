"""The job's states and the transitions between them: the one place that writes them down.

Every statement in :mod:`outbox.queries` that moves a job guards its WHERE clause with the
source states listed here, so two actors can never both win a transition.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    """Committed, due at ``run_at``; waiting for the relay (broker) or a worker (table source)."""
    PUBLISHED = "PUBLISHED"
    """The broker acknowledged the message; waiting for a worker to claim it."""
    PROCESSING = "PROCESSING"
    """A worker holds a lease on it and runs its handler."""
    COMPLETED = "COMPLETED"
    """The handler returned. Final."""
    FAILED = "FAILED"
    """The last attempt raised; runs again once ``run_at`` (the backoff) has passed."""
    DEAD = "DEAD"
    """Attempts used up or a permanent error; only an operator brings it back."""
    CANCELLED = "CANCELLED"
    """Stopped by an operator before it ran."""


# Allowed moves, and who makes each. Anything not listed is illegal.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {
            JobStatus.PUBLISHED,  # relay, after the broker acknowledged
            JobStatus.PROCESSING,  # worker claims (table source, or a delivery that beat the mark)
            JobStatus.CANCELLED,  # operator
        }
    ),
    JobStatus.PUBLISHED: frozenset(
        {
            JobStatus.PROCESSING,  # worker claims the delivered job
            JobStatus.PENDING,  # operator requeue: the broker lost the message
            JobStatus.CANCELLED,  # operator; a later delivery then finds nothing to claim
        }
    ),
    JobStatus.PROCESSING: frozenset(
        {
            JobStatus.COMPLETED,  # handler returned (lease token must match)
            JobStatus.FAILED,  # handler raised, attempts left
            JobStatus.DEAD,  # attempts used up, or a permanent error
            JobStatus.PENDING,  # lease expired and rescued, lease given back, or snoozed
        }
    ),
    JobStatus.FAILED: frozenset(
        {
            JobStatus.PENDING,  # backoff elapsed (promote), or operator retry
            JobStatus.CANCELLED,  # operator
        }
    ),
    JobStatus.DEAD: frozenset({JobStatus.PENDING}),  # operator requeue
    JobStatus.CANCELLED: frozenset({JobStatus.PENDING}),  # operator requeue
    # Only an operator's replay (audited, `outbox replay`) brings a completed job back, to be
    # published again with the same job_id. Nothing in the system does it on its own: a run
    # reaches COMPLETED at most once, a replay starts the job's life over.
    JobStatus.COMPLETED: frozenset({JobStatus.PENDING}),
}

LIVE_STATES: frozenset[JobStatus] = frozenset(
    {JobStatus.PENDING, JobStatus.PUBLISHED, JobStatus.PROCESSING, JobStatus.FAILED}
)
"""States in which the system still owes the job some work."""

FINISHED_STATES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED}
)
"""States nothing leaves on its own; rows here are pruned after their retention."""


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    """Whether a job may move from ``source`` to ``target``."""
    return target in TRANSITIONS[source]


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every state from which ``target`` can be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
