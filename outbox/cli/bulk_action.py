"""One bulk operator action on the jobs a filter matches: preview it, or apply it in batches.

Applying takes the matching jobs in ``id`` order, up to the last id that matched when it started,
so rows added meanwhile (replayed copies among them) are never taken. Each batch is one
transaction that moves the rows and writes one audit row: both commit, or neither. The statement
that moves a batch checks each row's status again, so a row that changed since the preview (or
since its batch was read) is simply not matched. Between batches a :class:`Pacer` keeps the
command at or under its rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from outbox import failpoints, queries
from outbox.cli.pacing import Pacer
from outbox.job_record import JobRecord

Move = Callable[[Connection, Sequence[JobRecord]], Sequence[str]]
"""(conn, a batch of matching jobs) -> the ``job_id`` of each job it changed (or created)."""

_NO_UPPER_BOUND = 2**63 - 1


@dataclass(frozen=True)
class BulkAction:
    """What to do (``name``, as the audit trail calls it), to which jobs, and how."""

    name: str
    job_filter: queries.JobFilter
    """Which jobs; its ``statuses`` are those the action may move (the move re-checks them)."""
    move: Move
    audit_filter: Mapping[str, Any] = field(default_factory=dict)
    """What the operator asked for, as written to the audit row (with each batch's id range)."""
    wake: bool = False
    """NOTIFY the relay and workers after a batch: it made jobs PENDING."""


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[JobRecord]


@dataclass(frozen=True)
class Outcome:
    matched: int
    """Jobs that matched when the command started."""
    changed: int
    """Jobs the command changed (deleted, for purge; created, for a replay as new jobs)."""
    batches: int
    """Batches that changed something: one audit row each."""
    interrupted: bool = False


def preview(conn: Connection, action: BulkAction, *, sample_size: int = 10) -> Preview:
    """How many jobs the action would take now, and the first ``sample_size`` of them."""
    with conn.begin():
        count = queries.count_matching(conn, action.job_filter)
        sample = queries.matching_batch(
            conn, action.job_filter, after_id=0, up_to_id=_NO_UPPER_BOUND, limit=sample_size
        )
    return Preview(count, sample)


def apply(
    conn: Connection, action: BulkAction, *, actor: str, reason: str, batch_size: int, pacer: Pacer
) -> Outcome:
    """Apply the action batch after batch; Ctrl-C stops it between batches (or rolls one back)."""
    with conn.begin():
        matched = queries.count_matching(conn, action.job_filter)
        last_id = queries.last_matching_id(conn, action.job_filter)
    changed = batches = 0
    after_id = 0
    limit = pacer.batch_size(batch_size)
    try:
        while last_id is not None and after_id < last_id:
            with conn.begin():
                batch = queries.matching_batch(
                    conn, action.job_filter, after_id=after_id, up_to_id=last_id, limit=limit
                )
                moved = _move_batch(conn, action, batch, actor=actor, reason=reason)
            if not batch:
                break
            after_id = batch[-1].id
            changed += moved
            batches += moved > 0
            pacer.after(len(batch))
    except KeyboardInterrupt:
        return Outcome(matched, changed, batches, interrupted=True)
    return Outcome(matched, changed, batches)


def _move_batch(
    conn: Connection, action: BulkAction, batch: Sequence[JobRecord], *, actor: str, reason: str
) -> int:
    """Move one batch and write it down, inside the caller's transaction; how many moved."""
    if not batch:
        return 0
    moved = action.move(conn, batch)
    failpoints.failpoint("operator.after_change")
    if moved:
        ids = {"id_range": [batch[0].id, batch[-1].id]}
        queries.record_audit(
            conn, actor=actor, action=action.name, job_filter={**action.audit_filter, **ids},
            count=len(moved), reason=reason,
        )  # fmt: skip
        if action.wake:
            queries.wake_listeners(conn)
    failpoints.failpoint("operator.after_audit")
    return len(moved)
