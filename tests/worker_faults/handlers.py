"""Handlers for ``outbox worker --handlers tests.worker_faults.handlers``.

Every run appends ``run <job_id> <attempt> <pid>`` to ``$FAULTS_DIR/runs.log`` before it does
anything else, and a gated run ``done ...`` when it returns. Outside the job's transaction, so a
run whose outcome never committed still shows; one ``write`` on an ``O_APPEND`` descriptor, so
lines of several processes never mix.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import worker

MAX_ATTEMPTS = 3
HANG_SECONDS = 3.0  # far past TIMEOUT_SECONDS: the worker must give up on the attempt itself
TIMEOUT_SECONDS = 0.2
RETRY_BASE_SECONDS = 0.05  # attempts run out in well under a second of backoff
RETRY_MAX_SECONDS = 0.1
POISON_POLICY: dict[str, Any] = {
    "max_attempts": MAX_ATTEMPTS,
    "retry_base_seconds": RETRY_BASE_SECONDS,
    "retry_max_seconds": RETRY_MAX_SECONDS,
}
"""Every poison type's policy: attempts run out fast."""


def record_run(job: worker.Job, event: str = "run") -> None:
    line = f"{event} {job.job_id} {job.attempt} {os.getpid()}\n".encode()
    fd = os.open(Path(os.environ["FAULTS_DIR"]) / "runs.log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@worker.handler("faults.healthy", max_attempts=20)  # reruns after a worker died must not run out
def healthy(job: worker.Job) -> dict[str, int]:
    record_run(job)
    return {"done_by": os.getpid()}


@worker.handler("faults.gated", max_attempts=MAX_ATTEMPTS)
def gated(job: worker.Job) -> dict[str, int]:
    """Runs until ``$FAULTS_DIR/open-<gate>`` exists, whatever happens to its lease meanwhile."""
    record_run(job)
    gate = Path(os.environ["FAULTS_DIR"]) / f"open-{job.payload['gate']}"
    while not gate.exists():
        time.sleep(0.02)  # polling a file another process creates
    record_run(job, "done")
    return {"done_by": os.getpid()}


@worker.handler("faults.poison.raises", **POISON_POLICY)
def raises(job: worker.Job) -> None:
    record_run(job)
    raise RuntimeError("poison: raises on every attempt")


@worker.handler("faults.poison.hangs", timeout_seconds=TIMEOUT_SECONDS, **POISON_POLICY)
def hangs(job: worker.Job) -> None:
    record_run(job)
    time.sleep(HANG_SECONDS)  # deaf to its cancellation, as a handler stuck in a C call is


@worker.handler("faults.poison.kills", **POISON_POLICY)
def kills(job: worker.Job) -> None:
    record_run(job)
    os.kill(os.getpid(), signal.SIGKILL)  # takes its worker, and every job running there, along
