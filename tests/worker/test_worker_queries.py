"""The worker's own statements against every state: fenced by the lease token, legal moves only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from outbox import queries
from outbox.job_record import Lease
from outbox.states import JobStatus, can_transition
from tests.jobs_on_disk import T0, lease_of, place_job, read_row

S = JobStatus
LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Move:
    name: str
    target: JobStatus | None  # None: the status stays, another column changes
    run: Callable[[sa.Connection, Lease], object]


MOVES = [
    Move("snooze", S.PENDING,
         lambda c, le: queries.snooze(c, le, run_in=timedelta(minutes=2), now=T0)),
    Move("release_leases", S.PENDING, lambda c, le: queries.release_leases(c, [le], now=T0)),
    Move("extend_leases", None, lambda c, le: queries.extend_leases(c, [le], lease=LEASE, now=T0)),
    Move("report_progress", None,
         lambda c, le: queries.report_progress(c, le, '{"done": 1}', now=T0)),
]  # fmt: skip


@pytest.mark.parametrize("move", MOVES, ids=lambda m: m.name)
def test_every_worker_move_is_written_down_in_the_state_machine(move: Move) -> None:
    assert move.target is None or can_transition(S.PROCESSING, move.target)


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
@pytest.mark.parametrize("move", MOVES, ids=lambda m: m.name)
def test_worker_moves_change_only_processing_jobs_under_the_current_lease(
    conn: sa.Connection, move: Move, status: JobStatus
) -> None:
    job = place_job(conn, status)
    before = read_row(conn, job.id)

    move.run(conn, Lease(job.id, queries.new_lease_token()))  # a stale token: a zombie
    assert read_row(conn, job.id) == before, f"{move.name} obeyed a stale lease"

    move.run(conn, lease_of(job))
    after = read_row(conn, job.id)
    assert after is not None
    if status is not S.PROCESSING:
        assert after == before, f"{move.name} changed a {status} job"
    else:
        assert after["status"] == (move.target or S.PROCESSING)
        assert after["updated_at"] == T0


def test_snooze_gives_the_attempt_back_and_is_due_after_the_delay(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING, attempts=2, max_attempts=3)
    assert queries.snooze(conn, lease_of(job), run_in=timedelta(minutes=2), now=T0)
    row = read_row(conn, job.id)
    assert row is not None
    assert (row["attempts"], row["run_at"], row["lease_token"], row["locked_by"]) == (
        1, T0 + timedelta(minutes=2), None, None,
    )  # fmt: skip


def test_release_gives_back_only_the_leases_still_held_and_their_attempts(
    conn: sa.Connection,
) -> None:
    held = place_job(conn, S.PROCESSING, attempts=1)
    rescued = place_job(conn, S.PROCESSING, attempts=1)
    stale = Lease(rescued.id, queries.new_lease_token())

    assert queries.release_leases(conn, [lease_of(held), stale], now=T0) == [held.id]
    row = read_row(conn, held.id)
    assert row is not None
    assert (row["status"], row["attempts"], row["run_at"], row["lease_token"]) == (
        S.PENDING, 0, T0, None,
    )  # fmt: skip


def test_the_heartbeat_extends_held_leases_and_names_them(conn: sa.Connection) -> None:
    held = place_job(conn, S.PROCESSING)
    lost = place_job(conn, S.PROCESSING)
    stale = Lease(lost.id, queries.new_lease_token())

    assert queries.extend_leases(conn, [lease_of(held), stale], lease=LEASE, now=T0) == [held.id]
    row = read_row(conn, held.id)
    assert row is not None
    assert row["locked_until"] == T0 + LEASE


def test_progress_is_stored_as_json(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING)
    assert queries.report_progress(conn, lease_of(job), '{"done": 2, "of": 5}', now=T0)
    row = read_row(conn, job.id)
    assert row is not None
    assert row["progress"] == {"done": 2, "of": 5}


def test_a_claim_can_leave_types_out(conn: sa.Connection) -> None:
    place_job(conn, S.PENDING, type="busy")
    other = place_job(conn, S.PENDING, type="other")
    claimed = queries.claim_batch(
        conn, worker_id="w", limit=10, lease=LEASE, default_max_attempts=5,
        exclude_types=["busy"], now=T0,
    )  # fmt: skip
    assert [j.id for j in claimed] == [other.id]
