"""Exclusivity at the process level: a worker frozen with SIGSTOP past its lease loses the job.

The frozen worker's heartbeat stops with it, so its lease runs out; another worker's rescuer
gives the job back (the attempt counts) and that worker runs and completes it. After SIGCONT the
frozen worker's handler returns and the worker tries to complete the job under its old lease
token: the row refuses, and nothing about it changes.
"""

from __future__ import annotations

import json
import signal
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.schema import jobs
from outbox.states import JobStatus as S
from tests.waiting import wait_until
from tests.worker_faults.conftest import (
    LEASE_SECONDS,
    Run,
    Transition,
    Workers,
    record_transitions,
    transitions,
)


def discarded(log: str, job_id: str) -> bool:
    """Whether the worker logged (JSON) that it lost the lease of ``job_id`` when completing."""
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line still being written, or not JSON
        if (entry.get("message"), entry.get("job_id")) == ("lease lost; outcome discarded", job_id):
            return True
    return False


def test_a_worker_stopped_past_its_lease_loses_the_job_and_its_late_completion_changes_nothing(
    engine: Engine, workers: Workers
) -> None:
    record_transitions(engine)
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "faults.gated", {"gate": "g1"})
    row = sa.select(jobs).where(jobs.c.job_id == job_id)

    frozen = workers.start()
    assert wait_until(lambda: len(workers.runs()) == 1, timeout=30)
    with engine.connect() as conn:
        first_lease = conn.execute(row).one()
    frozen.send_signal(signal.SIGSTOP)  # a long GC pause, a frozen VM: alive but silent
    frozen_at = time.monotonic()
    try:
        other = workers.start()
        assert wait_until(lambda: len(workers.runs()) == 2, timeout=30), workers.runs()
        with engine.connect() as conn:
            second_lease = conn.execute(row).one()
        (workers.workdir / "open-g1").touch()  # only the running one sees it: the other is frozen

        def completed() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(row).one().status == S.COMPLETED)

        assert wait_until(completed, timeout=30)
        with engine.connect() as conn:
            before = conn.execute(row).one()
        frozen_for = time.monotonic() - frozen_at
    finally:
        frozen.send_signal(signal.SIGCONT)

    # The frozen handler wakes, finds its gate open and returns; the worker's completion under
    # the first lease token is refused.
    assert wait_until(lambda: discarded(workers.log(frozen), job_id), timeout=30)
    with engine.connect() as conn:
        after = conn.execute(row).one()
        moves = transitions(conn)

    assert frozen_for > LEASE_SECONDS
    assert after == before  # every column: not completed twice, nothing overwritten
    assert (after.status, after.attempts, after.result) == (S.COMPLETED, 2, {"done_by": other.pid})
    # The frozen worker's token stopped fencing anything when the rescue took the lease away.
    assert (first_lease.status, first_lease.attempts) == (S.PROCESSING, 1)
    assert (second_lease.status, second_lease.attempts) == (S.PROCESSING, 2)
    assert second_lease.lease_token not in (None, first_lease.lease_token)
    assert second_lease.locked_by != first_lease.locked_by
    assert (after.lease_token, after.locked_until) == (None, None)
    assert moves == [
        Transition(job_id, S.PENDING, S.PROCESSING, 1, frozen.pid),  # claimed: attempt 1
        Transition(job_id, S.PROCESSING, S.PENDING, 1, frozen.pid),  # rescued: lease ran out
        Transition(job_id, S.PENDING, S.PROCESSING, 2, other.pid),  # claimed: attempt 2
        Transition(job_id, S.PROCESSING, S.COMPLETED, 2, other.pid),  # once, by the other
    ]
    assert workers.runs() == [
        Run("run", job_id, 1, frozen.pid),
        Run("run", job_id, 2, other.pid),
        Run("done", job_id, 2, other.pid),
        Run("done", job_id, 1, frozen.pid),  # returned after SIGCONT; its outcome discarded
    ]
    assert workers.stop(frozen) == 0
    assert workers.stop(other) == 0
