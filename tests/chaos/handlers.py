"""Handlers for ``outbox worker --handlers tests.chaos.handlers``: every run is written down.

One short ``write`` per line to ``$CHAOS_DIR/runs.log``, outside the job's transaction, so a
run that a crash undoes still shows (lines from several processes never interleave).
"""

from __future__ import annotations

import os
from pathlib import Path

import worker


@worker.handler("chaos.order")
def order(job: worker.Job) -> None:
    line = f"run {job.job_id} {job.attempt} {os.getpid()}\n"
    with open(Path(os.environ["CHAOS_DIR"]) / "runs.log", "a") as log:
        log.write(line)
