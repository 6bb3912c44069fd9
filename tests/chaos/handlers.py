"""Handlers for ``outbox worker --handlers tests.chaos.handlers``: every run is written down.

One short ``write`` per line to ``$CHAOS_DIR/runs.log``, outside the job's transaction, so a
run that a crash undoes still shows (lines from several processes never interleave). Then the
run takes ``$CHAOS_HANDLER_SECONDS`` (default 0).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import worker


@worker.handler("chaos.order")
def order(job: worker.Job) -> None:
    line = f"run {job.job_id} {job.attempt} {os.getpid()}\n"
    with open(Path(os.environ["CHAOS_DIR"]) / "runs.log", "a") as log:
        log.write(line)
    # A scenario may keep each job in its worker's hands a while (its work, in a real handler).
    time.sleep(float(os.environ.get("CHAOS_HANDLER_SECONDS", "0")))
