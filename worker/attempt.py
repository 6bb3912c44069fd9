"""One attempt: run the handler and say what became of it, without touching the database.

The outcome writer turns each outcome into one fenced statement; keeping the two apart lets the
timeout watchdog and the shutdown path report outcomes of their own through the same door.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from outbox import tracing
from outbox.logging_setup import JobFields
from worker.handler_errors import PermanentError, Retry
from worker.handlers import HandlerSpec
from worker.job import Job
from worker.json_text import to_json_text

log = logging.getLogger(__name__)

TRACEBACK_LINES = 20
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Completed:
    """The handler returned; ``result_json`` is what it returned, as JSON (None: nothing)."""

    result_json: str | None


NOTHING_RETURNED = Completed(None)
"""The outcome of every handler that returns None: one shared, immutable, made once."""


@dataclass(frozen=True)
class Failed:
    """The attempt failed: retried with backoff while attempts remain, unless ``permanent``."""

    error: str
    traceback: str | None = None
    permanent: bool = False
    timed_out: bool = False  # the watchdog's, not the handler's: counted apart in the metrics


@dataclass(frozen=True)
class Snoozed:
    """Run again after ``run_in``; the attempt is given back (Retry, or over a rate limit)."""

    run_in: timedelta


Outcome = Completed | Failed | Snoozed


def run_attempt(spec: HandlerSpec, job: Job, *, traced: bool = False) -> Outcome:
    """Call the handler once and classify how it ended; ``traced``: :func:`tracing.recording`."""
    try:
        with (
            JobFields(job_id=job.job_id, type=job.type, attempt=job.attempt),
            tracing.job_span(job.type, job.job_id, job.attempt, lambda: job.headers, traced=traced),
        ):
            result = spec.func(job)
    except BaseException as exc:  # SystemExit in a handler thread must not kill the thread
        return _ended_by(exc)
    if result is not None and inspect.isawaitable(result):
        return _awaitable_returned(result)
    return _completed(job, result)


async def run_attempt_async(spec: HandlerSpec, job: Job, *, traced: bool = False) -> Outcome:
    """:func:`run_attempt` for an ``async def`` handler, awaited on the worker's event loop.

    A cancellation (the timeout, a lost lease, shutdown) ends the attempt like an exception:
    whoever cancelled it has already settled the job, so this outcome is discarded.
    """
    try:
        with (
            JobFields(job_id=job.job_id, type=job.type, attempt=job.attempt),
            tracing.job_span(job.type, job.job_id, job.attempt, lambda: job.headers, traced=traced),
        ):
            result = await spec.func(job)
    except BaseException as exc:
        return _ended_by(exc)
    return _completed(job, result)


def _ended_by(exc: BaseException) -> Outcome:
    if isinstance(exc, Retry):
        return Snoozed(exc.after)
    if isinstance(exc, PermanentError):
        return Failed(*describe(exc), permanent=True)
    return Failed(*describe(exc))


def _awaitable_returned(result: Any) -> Failed:
    # Completing it would record work that never ran; retrying cannot make it run.
    if inspect.iscoroutine(result):
        result.close()  # no "never awaited" warning: the error below says it
    return Failed(
        f"the handler returned {type(result).__name__} {result!r:.80} instead of a result: "
        "declare it `async def` (the worker awaits those), or return a value",
        permanent=True,
    )


def no_handler(job_type: str, known: list[str]) -> Failed:
    """A job of a type this worker has no handler for: retrying here cannot help."""
    handled = ", ".join(sorted(known)) or "none"
    return Failed(
        f"no handler registered for job type {job_type!r} (this worker handles: {handled})",
        permanent=True,
    )


def timed_out(seconds: float) -> Failed:
    return Failed(f"timed out after {seconds:g} s", timed_out=True)


def describe(exc: BaseException) -> tuple[str, str]:
    """The error line (type and message, bounded) and the last lines of its traceback."""
    message = f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__
    lines = "".join(traceback.format_exception(exc)).splitlines()
    return message[:MAX_ERROR_CHARS], "\n".join(lines[-TRACEBACK_LINES:])


def _completed(job: Job, result: object) -> Completed:
    # Most handlers return None: one shared outcome, no object made per job.
    return NOTHING_RETURNED if result is None else Completed(_result_json(job, result))


def _result_json(job: Job, result: object) -> str | None:
    try:
        return to_json_text(result)
    except ValueError as exc:
        # The work is done; failing now would run its side effects again for a storage problem.
        log.warning(
            "handler result not stored",
            extra={"job_id": job.job_id, "type": job.type, "reason": str(exc)},
        )
        return None
