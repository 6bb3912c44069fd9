"""Runbooks about jobs in a bad state, each run against a stack that shows its symptom.

Every block of the runbook runs (see :mod:`tests.runbooks.runbook_runner`); then the test asserts
the symptom is gone.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway import JobSpec
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.jobs_on_disk import place_job
from tests.operator_cli import audit_rows, place
from tests.runbooks.conftest import MakeStack, database_now, enqueue, statuses, wait_for
from tests.runbooks.runbook_runner import run_runbook
from tests.waiting import wait_until

WORKER = 'outbox worker --handlers "$HANDLERS_MODULE"'


def test_dead_jobs_are_requeued_and_complete_once_their_dependency_is_back(
    database_url: str, engine: Engine, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url)
    (stack.state / "payments-down").touch()
    stack.start(WORKER, kind="worker")
    payments = enqueue(engine, [JobSpec("payment.capture", {"amount": n}) for n in range(6)])
    unrelated = place(engine, JobStatus.DEAD, 2, type="email.send")
    wait_for(engine, payments, "DEAD")
    (stack.state / "payments-down").unlink()  # Mitigate step 1: the cause is fixed

    run = run_runbook("dead-jobs.md", stack, values={"type": "payment.capture"})

    assert "payment API unavailable" in run.output("Diagnose")
    wait_for(engine, payments, "COMPLETED")
    assert statuses(engine, unrelated) == ["DEAD", "DEAD"]
    [audit] = audit_rows(engine)
    assert (audit.action, audit.count, audit.reason) == (
        "requeue-dead", 6, "dependency restored (INC-1234)")  # fmt: skip
    assert set(stack.stop_all().values()) == {0}


def test_a_poison_job_is_cancelled_while_the_rest_of_its_type_runs(
    database_url: str, engine: Engine, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url)
    stack.start(WORKER, kind="worker")
    [poison, *fine] = enqueue(engine, [JobSpec("report.render", {"rows": rows})
                                       for rows in (50_000_000, 10, 200, 3000)])  # fmt: skip
    wait_for(engine, fine, "COMPLETED")
    wait_for(engine, [poison], "FAILED")  # timed out; its next attempt is a minute away

    run = run_runbook("poison-job.md", stack, values={"job_id": poison})

    assert poison in run.output("Diagnose")
    assert "timed out after 0.5 s" in run.output("Diagnose")
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.job_id == poison)).mappings().one()
    assert (row["status"], row["attempts"]) == ("CANCELLED", 1)
    assert row["last_error"] == "poison job, see INC-1234"
    assert set(stack.stop_all().values()) == {0}


def test_stuck_jobs_are_rescued_and_a_hung_worker_gives_its_job_back(
    database_url: str, engine: Engine, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url)
    # A worker whose rescuer ran once at start and never again: it stands for "no rescuer".
    hung = stack.start(WORKER, kind="worker", OUTBOX_RESCUE_INTERVAL_SECONDS="3600")
    [hanging] = enqueue(engine, [JobSpec("export.build", {"hang_once": True})])
    assert wait_until(lambda: (stack.state / f"hung-{hanging}").exists(), timeout=20)
    expired = datetime.now(UTC) - timedelta(minutes=10)
    with engine.begin() as conn:  # a worker that died holding three jobs
        orphans = [place_job(conn, JobStatus.PROCESSING, type="export.build", payload={},
                             locked_by="worker-7f9c:4242:ab12cd", locked_until=expired,
                             started_at=expired, created_at=expired).job_id
                   for _ in range(3)]  # fmt: skip

    def delete_hung_pod() -> None:  # what `kubectl delete pod` does: SIGTERM to the worker
        assert stack.stop(hung) == 0

    run = run_runbook("stuck-processing.md", stack, values={"pod": socket.gethostname()},
                      stand_ins=[delete_hung_pod])  # fmt: skip

    assert "worker-7f9c:4242:ab12cd" in run.output("Diagnose")
    assert socket.gethostname() in run.output("Diagnose")
    wait_for(engine, [*orphans, hanging], "COMPLETED")
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(jobs.c.job_id, jobs.c.attempts)).all()
    assert dict(attempts) == {hanging: 1} | dict.fromkeys(orphans, 2)  # the lost attempt counts
    assert set(stack.stop_all().values()) == {0}


def test_jobs_a_buggy_consumer_completed_are_replayed_and_run_by_the_fixed_one(
    database_url: str, engine: Engine, redis_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url, OUTBOX_BROKER="redis", OUTBOX_REDIS_URL=redis_url,
                       OUTBOX_REDIS_STREAM_PREFIX=f"{stack_prefix(database_url)}:")  # fmt: skip
    for service in [stack.start("outbox relay", kind="relay", wait=False),
                    stack.start(WORKER, kind="worker", wait=False)]:  # fmt: skip
        stack.wait_up(service)

    def invoices(n: int) -> list[str]:
        done = enqueue(engine, [JobSpec("invoice.sync", {"lines": [i, 10, 20]}) for i in range(n)])
        wait_for(engine, done, "COMPLETED")
        return done

    before = invoices(3)
    (stack.state / "invoice-bug").touch()  # the buggy release
    since = database_now(engine)
    wrong = invoices(4)
    until = database_now(engine)
    (stack.state / "invoice-bug").unlink()  # Mitigate step 1: the fix is rolled out
    after = invoices(2)
    untouched = finished_at(engine, before + after)

    run = run_runbook("replay-after-consumer-bug.md", stack,
                      values={"type": "invoice.sync", "since": since, "until": until})  # fmt: skip

    assert wrong[-1] in run.output("Diagnose")
    assert wait_until(lambda: totals(engine, wrong) == [30, 31, 32, 33], timeout=30)
    wait_for(engine, wrong, "COMPLETED")
    assert finished_at(engine, before + after) == untouched
    [audit] = audit_rows(engine)
    assert (audit.action, audit.count) == ("replay", 4)
    assert set(stack.stop_all().values()) == {0}


def stack_prefix(database_url: str) -> str:
    """Streams of their own per test: the test database's name."""
    return str(sa.make_url(database_url).database)


def totals(engine: Engine, job_ids: list[str]) -> list[int | None]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.job_id, jobs.c.status, jobs.c.result)
                            .where(jobs.c.job_id.in_(job_ids))).all()  # fmt: skip
    found = {r.job_id: r.result["total"] for r in rows if r.status == "COMPLETED" and r.result}
    return [found.get(j) for j in job_ids]


def finished_at(engine: Engine, job_ids: list[str]) -> dict[str, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.job_id, jobs.c.finished_at)
                            .where(jobs.c.job_id.in_(job_ids)))  # fmt: skip
        return dict(rows.all())
