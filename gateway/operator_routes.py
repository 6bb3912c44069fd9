"""Operator actions on one job: retry and cancel, each with a reason, each audited.

The change and its audit record are written in one transaction: an action is either done and
written down, or neither. The audit names the token (``actor``), never the token's secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

from fastapi import FastAPI
from sqlalchemy.engine import Connection

from gateway.api_models import JobOut, OperatorAction
from gateway.app_context import Caller, Context
from gateway.job_routes import JobIdPath
from gateway.problems import ApiProblem, problem_responses
from outbox import queries
from outbox.states import JobStatus, sources_of

Move = Callable[[Connection, str, str], Sequence[str]]
"""(conn, job_id, reason) -> the job_ids the action moved."""


TAGS: list[str | Enum] = ["operators"]


def add_operator_routes(router: FastAPI) -> None:
    """Register these routes on the app (directly: the route table checks ``app.routes``)."""
    documented = problem_responses(401, 403, 404, 409, 413, 422, 429, 503)

    @router.post("/v1/jobs/{job_id:path}/retry", tags=TAGS, responses=documented)
    def retry_job(job_id: JobIdPath, body: OperatorAction, context: Context, who: Caller) -> JobOut:
        """PUBLISHED, FAILED, DEAD or CANCELLED -> PENDING, due now (DEAD and CANCELLED with
        fresh attempts). Audited."""
        return _act(context, who.name, "retry", job_id, body.reason, _requeue)

    @router.post("/v1/jobs/{job_id:path}/cancel", tags=TAGS, responses=documented)
    def cancel_job(
        job_id: JobIdPath, body: OperatorAction, context: Context, who: Caller
    ) -> JobOut:
        """PENDING, PUBLISHED or FAILED -> CANCELLED; the reason becomes its last error. Audited."""
        return _act(context, who.name, "cancel", job_id, body.reason, _cancel)


def _requeue(conn: Connection, job_id: str, reason: str) -> Sequence[str]:
    return queries.requeue(conn, [job_id])


def _cancel(conn: Connection, job_id: str, reason: str) -> Sequence[str]:
    return queries.cancel(conn, [job_id], reason=reason)


_SOURCES = {"retry": queries.REQUEUE_SOURCES, "cancel": sources_of(JobStatus.CANCELLED)}


def _act(context: Context, actor: str, action: str, job_id: str, reason: str, move: Move) -> JobOut:
    with context.engine.begin() as conn:
        moved = move(conn, job_id, reason)
        if moved:
            queries.record_audit(
                conn, actor=actor, action=action, job_filter={"job_id": job_id},
                count=len(moved), reason=reason,
            )  # fmt: skip
        record = queries.get_job(conn, job_id)
    if record is None:
        raise ApiProblem(
            404, "not-found", "Job not found", f"no job with job_id {job_id!r}", reason="not_found"
        )
    if not moved:
        allowed = ", ".join(sorted(_SOURCES[action]))
        raise ApiProblem(
            409, "state-conflict", f"Cannot {action} this job",
            f"job {job_id!r} is {record.status}; {action} moves only {allowed} jobs",
            reason="conflict", job_ids=[job_id],
        )  # fmt: skip
    return JobOut.of(record)
