"""The in-process enqueue API: one job or many, one round trip, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from outbox import queries, tracing
from outbox.errors import InvalidJobError, JobConflictError
from outbox.new_job import EnqueueLimits, NewJob

DEFAULT_LIMITS = EnqueueLimits()


class JobSpec(NamedTuple):
    """One job for :func:`enqueue_many`; the fields mean what :func:`enqueue`'s arguments mean.

    A named tuple, immutable like a frozen dataclass: a caller builds one per job, and a frozen
    dataclass's ``__init__`` (a call per field) took 1.5 us, about a third of validating the job
    (0.5 us now). ``spec._replace(priority=5)`` gives a changed copy.
    """

    type: str
    payload: Any
    job_id: str | None = None
    key: str | None = None
    topic: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int | None = None
    headers: Mapping[str, str] | None = None


def enqueue(
    session: Session | Connection,
    type: str,
    payload: Any,
    *,
    job_id: str | None = None,
    key: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    headers: Mapping[str, str] | None = None,
    topic: str | None = None,
    limits: EnqueueLimits = DEFAULT_LIMITS,
    notify: bool = True,
) -> str:
    """Add one job to the caller's open transaction and return its ``job_id``; never commits.

    ``job_id`` defaults to a new UUID and ``key`` (the ordering key) to the ``job_id``. Higher
    ``priority`` runs first. ``max_attempts`` None follows the worker's policy for the type.
    Enqueueing an existing ``job_id`` with the same type, payload, key and topic changes nothing;
    with other content it raises :class:`JobConflictError` naming the ``job_id``. Bad input raises
    :class:`InvalidJobError` naming the field before the database is touched.
    """
    spec = JobSpec(type, payload, job_id, key, topic, priority, run_at, max_attempts, headers)
    return insert_validated(session, [validate_job(spec, limits)], notify=notify).job_ids[0]


def enqueue_many(
    session: Session | Connection,
    jobs: Sequence[JobSpec],
    *,
    limits: EnqueueLimits = DEFAULT_LIMITS,
    notify: bool = True,
) -> list[str]:
    """Add many jobs in one round trip; return their ``job_id`` in the order given; never commits.

    Every job is validated before anything is sent. When some ``job_id`` exists with other
    content, :class:`JobConflictError` names them all; the other jobs were added to the
    transaction, which the caller should roll back.
    """
    return insert_validated(session, validate_jobs(jobs, limits), notify=notify).job_ids


# The two halves of enqueue_many, for callers (the HTTP gateway) that check more between them.


@dataclass(frozen=True)
class EnqueueOutcome:
    """What :func:`insert_validated` did: every ``job_id`` in order, and which were new."""

    job_ids: list[str]
    inserted: frozenset[str]
    """The jobs this call added; the others already existed with the same content."""


def validate_jobs(jobs: Sequence[JobSpec], limits: EnqueueLimits = DEFAULT_LIMITS) -> list[NewJob]:
    """Validate every job, without touching the database; fields are named ``jobs[i].<field>``."""
    new_jobs = []
    trace_context = tracing.current_trace_context()  # one span is current for the whole batch
    for i, spec in enumerate(jobs):
        try:
            new_jobs.append(_validate(spec, limits, trace_context))
        except InvalidJobError as exc:
            raise InvalidJobError(f"jobs[{i}].{exc.field}", exc.message) from None
    _refuse_inner_duplicates(new_jobs)
    return new_jobs


def insert_validated(
    session: Session | Connection, new_jobs: Sequence[NewJob], *, notify: bool = True
) -> EnqueueOutcome:
    """Add validated jobs in one round trip, telling new jobs from idempotent repeats."""
    conn = session.connection() if isinstance(session, Session) else session
    inserted = frozenset(queries.insert_jobs(conn, new_jobs, notify=notify))
    existing = [j for j in new_jobs if j.job_id not in inserted]
    if existing:
        conflicts = queries.find_conflicting_jobs(conn, existing)
        if conflicts:
            raise JobConflictError(conflicts)
    return EnqueueOutcome([j.job_id for j in new_jobs], inserted)


def validate_job(spec: JobSpec, limits: EnqueueLimits = DEFAULT_LIMITS) -> NewJob:
    """Validate one job; :class:`InvalidJobError` names the bad field."""
    return _validate(spec, limits, tracing.current_trace_context())


def _validate(
    spec: JobSpec, limits: EnqueueLimits, trace_context: Mapping[str, str] | None
) -> NewJob:
    return NewJob.build(
        spec.type,
        spec.payload,
        job_id=spec.job_id,
        key=spec.key,
        topic=spec.topic,
        priority=spec.priority,
        run_at=spec.run_at,
        max_attempts=spec.max_attempts,
        headers=tracing.with_trace_context(spec.headers, trace_context),
        limits=limits,
    )


def _refuse_inner_duplicates(new_jobs: Sequence[NewJob]) -> None:
    seen: dict[str, NewJob] = {}
    for i, job in enumerate(new_jobs):
        first = seen.setdefault(job.job_id, job)
        if first is not job and _content(first) != _content(job):
            raise InvalidJobError(
                f"jobs[{i}].job_id", f"{job.job_id!r} appears twice with different content"
            )


def _content(job: NewJob) -> tuple[str, str, str, str | None]:
    return (job.type, job.payload_json, job.key, job.topic)
