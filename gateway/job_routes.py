"""Submitting and reading jobs: ``/v1/jobs``, ``/v1/jobs:batch``, ``/v1/jobs/{job_id}``.

Writes validate everything (the model, ``NewJob``, the type registry) before the backlog check,
and the backlog check before the transaction; a batch is one transaction, all or nothing.
Blocking database calls run in the thread pool: the write and list routes are plain ``def``
(FastAPI runs them in threads) and the long poll awaits each short read in a thread, so a
waiting client holds neither the event loop nor a thread.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from enum import Enum
from typing import Annotated
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Header, Path, Query, Request, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gateway.api_models import (
    BIGINT_MAX,
    BatchItem,
    BatchResult,
    CleanText,
    Identifier,
    JobBatch,
    JobIn,
    JobOut,
    JobPage,
    UtcTime,
)
from gateway.app_context import AppContext, Context
from gateway.enqueue import EnqueueOutcome, JobSpec, insert_validated, validate_job, validate_jobs
from gateway.problems import ApiProblem, invalid, problem_responses
from outbox import queries, tracing
from outbox.job_record import JobRecord
from outbox.new_job import NewJob
from outbox.states import FINISHED_STATES, JobStatus

JobIdPath = Annotated[Identifier, Path(description="The job's job_id.")]
TAGS: list[str | Enum] = ["jobs"]


def add_job_routes(router: FastAPI) -> None:
    """Register these routes on the app (directly: the route table checks ``app.routes``)."""
    write_problems = problem_responses(401, 403, 409, 413, 422, 429, 503)
    read_problems = problem_responses(401, 403, 404, 422, 429, 503)

    @router.post(
        "/v1/jobs",
        tags=TAGS,
        status_code=201,
        responses=write_problems | _repeat_response(),
    )
    def submit_job(
        body: JobIn,
        request: Request,
        response: Response,
        context: Context,
        idempotency_key: Annotated[
            Identifier | None,
            Header(alias="Idempotency-Key", description="The job_id, when the body has none."),
        ] = None,
    ) -> JobOut:
        """Submit one job. 201 with the job; 200 with the original for a repeat."""
        spec = _spec(body, _job_id(body.job_id, idempotency_key))
        with tracing.incoming_context(request.headers):
            new_job = validate_job(spec, context.config.limits)
        _check_types(context, [body], batch=False)
        outcome, record = _insert(context, [new_job], read_back=new_job.job_id)
        assert record is not None  # inserted or found in this very transaction
        response.status_code = 201 if outcome.inserted else 200
        response.headers["Location"] = f"/v1/jobs/{quote(new_job.job_id, safe='')}"
        return JobOut.of(record)

    @router.post(
        "/v1/jobs:batch",
        tags=TAGS,
        status_code=201,
        responses=write_problems | _repeat_response(),
    )
    def submit_batch(
        body: JobBatch, request: Request, response: Response, context: Context
    ) -> BatchResult:
        """Submit up to the configured number of jobs in one transaction: all or nothing."""
        if len(body.jobs) > context.config.max_batch:
            limit = context.config.max_batch
            raise invalid([("jobs", f"at most {limit} jobs per batch, not {len(body.jobs)}")])
        specs = [_spec(job, job.job_id) for job in body.jobs]
        with tracing.incoming_context(request.headers):
            new_jobs = validate_jobs(specs, context.config.limits)
        _check_types(context, body.jobs, batch=True)
        outcome, _ = _insert(context, new_jobs)
        response.status_code = 201 if outcome.inserted else 200
        return BatchResult(
            jobs=[BatchItem(job_id=j, created=j in outcome.inserted) for j in outcome.job_ids]
        )

    @router.get("/v1/jobs/{job_id:path}", tags=TAGS, responses=read_problems)
    async def read_job(
        job_id: JobIdPath,
        request: Request,
        context: Context,
        wait: Annotated[
            float | None,
            Query(
                ge=0,
                allow_inf_nan=False,
                description="Long poll: wait up to this many seconds (capped by the server) "
                "for the job to finish (COMPLETED, DEAD or CANCELLED).",
            ),
        ] = None,
    ) -> JobOut:
        """One job: status, attempts, last error, progress, result, publish receipt."""
        record = await _read_in_thread(context.engine, job_id)
        if record is None:
            raise _not_found(job_id)
        if wait:
            record = await _wait_until_finished(request, context, record, wait)
        return JobOut.of(record)

    @router.get("/v1/jobs", tags=TAGS, responses=read_problems)
    def list_jobs(
        context: Context,
        status: Annotated[list[JobStatus] | None, Query(description="Repeat for several.")] = None,
        job_type: Annotated[CleanText | None, Query(alias="type", max_length=200)] = None,
        key: Annotated[CleanText | None, Query(max_length=255)] = None,
        since: Annotated[UtcTime | None, Query(description="Created at or after.")] = None,
        until: Annotated[UtcTime | None, Query(description="Created before.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before_id: Annotated[
            int | None, Query(ge=1, le=BIGINT_MAX, description="next_before_id of the last page.")
        ] = None,
    ) -> JobPage:
        """Jobs newest first, one keyset page at a time (like ``outbox jobs list``)."""
        job_filter = queries.JobFilter(
            statuses=frozenset(status) if status else None,
            type=job_type,
            key=key,
            created_after=since,
            created_before=until,
        )
        with context.engine.connect() as conn:
            records = queries.list_jobs(conn, job_filter, limit=limit, before_id=before_id)
        next_before_id = records[-1].id if len(records) == limit else None
        return JobPage(jobs=[JobOut.of(r) for r in records], next_before_id=next_before_id)


def _repeat_response() -> dict[int | str, dict[str, str]]:
    return {200: {"description": "The job existed with this content: nothing was added."}}


def _job_id(in_body: str | None, in_header: str | None) -> str | None:
    if in_body is not None and in_header is not None and in_body != in_header:
        raise invalid([("job_id", "differs from the Idempotency-Key header; send one or the same")])
    return in_body if in_body is not None else in_header


def _spec(job: JobIn, job_id: str | None) -> JobSpec:
    return JobSpec(
        type=job.type,
        payload=job.payload,
        job_id=job_id,
        key=job.key,
        topic=job.topic,
        priority=job.priority,
        run_at=job.run_at,
        max_attempts=job.max_attempts,
        headers=job.headers,
    )


def _check_types(context: AppContext, jobs: Sequence[JobIn], *, batch: bool) -> None:
    """Refuse unknown types and payloads their schema refuses (when a registry is configured)."""
    registry = context.config.job_types
    errors = []
    for i, job in enumerate(jobs):
        errors.extend(registry.problems(job.type, job.payload, f"jobs[{i}]." if batch else ""))
    if errors:
        raise invalid(errors)


def _insert(
    context: AppContext, new_jobs: Sequence[NewJob], *, read_back: str | None = None
) -> tuple[EnqueueOutcome, JobRecord | None]:
    """Admit (backlog), then insert in one transaction, reading ``read_back`` in it; count what
    was added."""
    wanted = Counter(j.type for j in new_jobs)
    _admit(context, wanted)
    with context.engine.begin() as conn:
        outcome = insert_validated(conn, new_jobs, notify=context.config.notify)
        record = None if read_back is None else queries.get_job(conn, read_back)
    added = Counter(j.type for j in new_jobs if j.job_id in outcome.inserted)
    context.backlog.note_accepted(added)
    for job_type, n in added.items():
        context.metrics.count_enqueued(job_type, n)
    return outcome, record


def _admit(context: AppContext, wanted: Counter[str]) -> None:
    full = context.backlog.over_bound(wanted)
    if full is None:
        return
    retry_after = context.config.backlog_retry_after_seconds
    raise ApiProblem(
        503, "backlog-full", "Backlog full",
        f"jobs of type {full!r} already wait beyond the bound of {context.backlog.bound(full)}; "
        f"retry after {retry_after} s",
        reason="backlog", headers={"Retry-After": str(retry_after)},
    )  # fmt: skip


def _read(engine: Engine, job_id: str) -> JobRecord | None:
    with engine.connect() as conn:
        return queries.get_job(conn, job_id)


async def _read_in_thread(engine: Engine, job_id: str) -> JobRecord | None:
    record: JobRecord | None = await run_in_threadpool(_read, engine, job_id)
    return record


def _not_found(job_id: str) -> ApiProblem:
    return ApiProblem(
        404, "not-found", "Job not found", f"no job with job_id {job_id!r}", reason="not_found"
    )


async def _wait_until_finished(
    request: Request, context: AppContext, record: JobRecord, wait: float
) -> JobRecord:
    """Reread the job, at growing intervals, until it is finished, the wait ends or the client
    leaves. Only the reads hold a thread; the waits between them are the event loop's."""
    config = context.config
    deadline = time.monotonic() + min(wait, config.max_wait_seconds)
    interval = config.first_poll_interval
    while record.status not in FINISHED_STATES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await request.is_disconnected():
            break
        await anyio.sleep(min(interval, remaining))
        interval = min(interval * 2, config.max_poll_interval)
        # A finished job pruned meanwhile leaves the last state read.
        record = await _read_in_thread(context.engine, record.job_id) or record
    return record
