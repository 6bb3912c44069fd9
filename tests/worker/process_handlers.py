"""Handlers for ``outbox worker --handlers tests.worker.process_handlers`` in process tests.

Each run appends lines to ``$WORKER_TEST_DIR/runs.log`` (one short ``write`` per line, so lines
from several processes never interleave) and waits until the file ``release-<gate>`` appears.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import worker
from outbox.failpoints import failpoint


def _record(event: str, job: worker.Job) -> None:
    line = f"{event} {job.job_id} {job.attempt} {os.getpid()}\n"
    with open(Path(os.environ["WORKER_TEST_DIR"]) / "runs.log", "a") as log:
        log.write(line)


@worker.handler("test.gated")
def gated(job: worker.Job) -> dict[str, int]:
    _record("start", job)
    gate = Path(os.environ["WORKER_TEST_DIR"]) / f"release-{job.payload['gate']}"
    while not gate.exists():
        if job.cancelled.wait(0.02):  # the worker gave the job back or lost its lease
            _record("cancelled", job)
            return {"cancelled_in": os.getpid()}
    _record("done", job)
    return {"done_by": os.getpid()}


@worker.handler("test.quick")
def quick(job: worker.Job) -> dict[str, int]:
    _record("start", job)
    failpoint("worker.in_handler")  # armed only when the test sets OUTBOX_FAILPOINTS
    _record("done", job)
    return {"done_by": os.getpid()}


@worker.handler("test.async_gated")
async def async_gated(job: worker.Job) -> dict[str, int]:
    _record("start", job)
    gate = Path(os.environ["WORKER_TEST_DIR"]) / f"release-{job.payload['gate']}"
    try:
        while not gate.exists():
            await asyncio.sleep(0.02)  # watching a file: there is no event to await
    except asyncio.CancelledError:  # the worker gave the job back or lost its lease
        _record("cancelled", job)
        raise
    _record("done", job)
    return {"done_by": os.getpid()}
