"""The operator commands of the real ``outbox`` program: preview, apply, refuse, audit."""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from outbox.states import JobStatus
from tests.acceptance.test_cli import run_outbox
from tests.operator_cli import place, statuses


def test_an_operator_previews_applies_and_reads_the_audit_trail(
    database_url: str, engine: Engine
) -> None:
    dead = place(engine, JobStatus.DEAD, 3, type="email.send")
    args = ("jobs", "requeue-dead", "--type", "email.send", "--reason", "SMTP fixed (INC-381)")

    preview = run_outbox(*args, database_url=database_url)
    assert preview.returncode == 0, preview.stderr
    assert "requeue-dead would take 3 jobs" in preview.stdout
    assert all(j in preview.stdout for j in dead)
    assert statuses(engine, dead) == ["DEAD"] * 3

    applied = run_outbox(*args, "--yes", "--actor", "oncall", database_url=database_url)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().splitlines()[-1] == (
        "requeue-dead: changed 3 of 3 matched jobs in 1 audited batches, actor oncall"
    )
    assert statuses(engine, dead) == ["PENDING"] * 3

    listed = run_outbox("audit", "list", "--json", database_url=database_url)
    [row] = json.loads(listed.stdout)["audit"]
    assert {k: row[k] for k in ("actor", "action", "count", "reason")} == {
        "actor": "oncall", "action": "requeue-dead", "count": 3, "reason": "SMTP fixed (INC-381)",
    }  # fmt: skip


def test_the_program_refuses_a_missing_reason_and_a_bad_filter(
    database_url: str, engine: Engine
) -> None:
    dead = place(engine, JobStatus.DEAD)
    missing = run_outbox("jobs", "requeue-dead", "--yes", database_url=database_url)
    assert missing.returncode == 2
    assert "Missing option '--reason'" in missing.stderr
    bad = run_outbox("jobs", "cancel", "--status", "PROCESSING", "--reason", "r", "--yes",
                     database_url=database_url)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: --status: cancel moves only")
    assert statuses(engine, dead) == ["DEAD"]
