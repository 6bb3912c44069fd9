"""Handlers for ``outbox worker --handlers tests.runbooks.handlers`` in the runbook scenarios.

What a scenario switches on or off (a dependency down, a bug deployed) is a file in
``$RUNBOOK_STATE``, so the test changes the behaviour of a running worker process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import worker


def _state(name: str) -> Path:
    return Path(os.environ["RUNBOOK_STATE"]) / name


@worker.handler("payment.capture", max_attempts=2, retry_base_seconds=0.05)
def capture_payment(job: worker.Job) -> dict[str, int]:
    """Fails while the payment API is "down" (the file ``payments-down`` exists)."""
    if _state("payments-down").exists():
        raise ConnectionError("payment API unavailable")
    return {"captured": job.payload["amount"]}


@worker.handler("email.send")
def send_email(job: worker.Job) -> dict[str, str]:
    time.sleep(0.005)
    return {"sent_to": job.payload["to"]}


@worker.handler("report.render", timeout_seconds=0.5, retry_base_seconds=60, max_attempts=20)
def render_report(job: worker.Job) -> dict[str, int]:
    """A report of more than a million rows never finishes: the poison job."""
    rows = int(job.payload["rows"])
    if rows > 1_000_000:
        job.cancelled.wait(30)  # stands for a render that never ends; its timeout cancels it
        raise RuntimeError("render abandoned")
    return {"pages": 1 + rows // 50}


@worker.handler("export.build")
def build_export(job: worker.Job) -> dict[str, bool]:
    """With ``hang_once``, the first run hangs (a call without a timeout) until given back."""
    marker = _state(f"hung-{job.job_id}")
    if job.payload.get("hang_once") and not marker.exists():
        marker.touch()
        job.cancelled.wait(120)
        return {"built": False}
    return {"built": True}


@worker.handler("invoice.sync")
def sync_invoice(job: worker.Job) -> dict[str, int]:
    """Writes the invoice total; while ``invoice-bug`` exists, the buggy release writes 0."""
    total = sum(int(line) for line in job.payload["lines"])
    if _state("invoice-bug").exists():
        total = 0
    return {"total": total}
