"""Handlers for ``outbox worker --handlers tests.worker.process_handlers`` in process tests.

Each run appends lines to ``$WORKER_TEST_DIR/runs.log`` (one short ``write`` per line, so lines
from several processes never interleave) and waits until the file ``release-<gate>`` appears.
"""

from __future__ import annotations

import os
import signal
import time
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


# Poison jobs: each kind fails every attempt in its own way; healthy ones run beside them.
POISON_RETRY = {"max_attempts": 3, "retry_base_seconds": 0.05, "retry_max_seconds": 0.1}


@worker.handler("test.healthy", max_attempts=10)
def healthy(job: worker.Job) -> None:
    _record("start", job)


@worker.handler("test.poison.raises", **POISON_RETRY)
def raises(job: worker.Job) -> None:
    _record("start", job)
    raise RuntimeError("poison")


@worker.handler("test.poison.hangs", timeout_seconds=0.3, **POISON_RETRY)
def hangs(job: worker.Job) -> None:
    _record("start", job)
    time.sleep(2)  # ignores its cancellation: the worker must give up on it by itself


@worker.handler("test.poison.kills", **POISON_RETRY)
def kills(job: worker.Job) -> None:
    _record("start", job)
    os.kill(os.getpid(), signal.SIGKILL)  # takes its worker, and every job running there, along
