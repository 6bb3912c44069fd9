"""Running the ``outbox`` program in-process (typer's CliRunner) against a test's database."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from outbox.cli import app
from outbox.queries import AuditRecord
from outbox.schema import audit, jobs
from outbox.states import JobStatus
from tests.jobs_on_disk import place_job


def invoke(database_url: str, *args: str, **env: str) -> Result:
    """``outbox ARGS...`` with ``OUTBOX_DATABASE_URL`` set; output captured, stderr apart.

    The command sets up logging on the runner's stderr, which closes afterwards: the test
    process's logging is put back as it was.
    """
    environment = {"OUTBOX_DATABASE_URL": database_url, "COLUMNS": "200",
                   "OUTBOX_FAILPOINTS": ""} | env  # fmt: skip
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(app, list(args), env=environment)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def place(engine: Engine, status: JobStatus, count: int = 1, **columns: Any) -> list[str]:
    """``count`` jobs in ``status`` (see :func:`tests.jobs_on_disk.place_job`); their job_ids."""
    with engine.begin() as conn:
        return [
            place_job(conn, status, job_id=f"{status.value.lower()}-{uuid.uuid4().hex[:8]}",
                      **columns).job_id
            for _ in range(count)
        ]  # fmt: skip


def statuses(engine: Engine, job_ids: Sequence[str]) -> list[str]:
    with engine.connect() as conn:
        found = dict(conn.execute(sa.select(jobs.c.job_id, jobs.c.status)).all())
    return [found.get(j, "gone") for j in job_ids]


def audit_rows(engine: Engine) -> list[AuditRecord]:
    """Every audit row, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(audit).order_by(audit.c.id)).mappings()
        return [AuditRecord(**row) for row in rows]


def audit_json(database_url: str, *args: str) -> list[dict[str, Any]]:
    result = invoke(database_url, "audit", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)["audit"]
    return rows
