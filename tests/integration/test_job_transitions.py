"""Every core statement against every state: legal moves happen, illegal ones change nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from outbox import queries
from outbox.job_record import Lease
from outbox.states import FINISHED_STATES, JobStatus, can_transition, sources_of
from tests.jobs_on_disk import T0, PlacedJob, lease_of, place_job, read_row, status_of

S = JobStatus
LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Move:
    name: str
    sources: frozenset[JobStatus]
    target: JobStatus | None  # None: the row is deleted
    run: Callable[[sa.Connection, PlacedJob], object]


MOVES = [
    Move("claim_batch", frozenset({S.PENDING}), S.PROCESSING,
         lambda c, j: queries.claim_batch(c, worker_id="w", limit=10, lease=LEASE,
                                          default_max_attempts=5, now=T0)),
    Move("claim_by_job_ids", frozenset({S.PENDING, S.PUBLISHED}), S.PROCESSING,
         lambda c, j: queries.claim_by_job_ids(c, job_ids=[j.job_id], worker_id="w", lease=LEASE,
                                               default_max_attempts=5, now=T0)),
    Move("mark_published", frozenset({S.PENDING}), S.PUBLISHED,
         lambda c, j: queries.mark_published(c, [queries.PublishReceipt(j.id, {"offset": 1})],
                                             now=T0)),
    Move("mark_completed", frozenset({S.PROCESSING}), S.COMPLETED,
         lambda c, j: queries.mark_completed(c, [queries.Completion(lease_of(j))], now=T0)),
    Move("schedule_retry", frozenset({S.PROCESSING}), S.FAILED,
         lambda c, j: queries.schedule_retry(c, lease_of(j), retry_in=timedelta(seconds=4),
                                             error="boom", now=T0)),
    Move("dead_letter", frozenset({S.PROCESSING}), S.DEAD,
         lambda c, j: queries.dead_letter(c, lease_of(j), error="permanent", now=T0)),
    Move("rescue_expired", frozenset({S.PROCESSING}), S.PENDING,
         lambda c, j: queries.rescue_expired(c, now=T0)),
    Move("promote_due_retries", frozenset({S.FAILED}), S.PENDING,
         lambda c, j: queries.promote_due_retries(c, now=T0)),
    Move("cancel", sources_of(S.CANCELLED), S.CANCELLED,
         lambda c, j: queries.cancel(c, [j.job_id], reason="operator said so", now=T0)),
    Move("requeue", queries.REQUEUE_SOURCES, S.PENDING,
         lambda c, j: queries.requeue(c, [j.job_id], now=T0)),
    Move("prune_finished", FINISHED_STATES, None,
         lambda c, j: queries.prune_finished(c, older_than=timedelta(days=7), now=T0)),
    Move("replay", queries.REPLAY_SOURCES, S.PENDING,
         lambda c, j: queries.replay(c, [j.job_id], now=T0)),
    Move("purge", FINISHED_STATES, None,
         lambda c, j: queries.purge(c, [j.job_id], finished_before=T0)),
]  # fmt: skip


@pytest.mark.parametrize("move", MOVES, ids=lambda m: m.name)
def test_every_move_is_written_down_in_the_state_machine(move: Move) -> None:
    for source in move.sources:
        if move.target is not None:
            assert can_transition(source, move.target), (move.name, source)


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
@pytest.mark.parametrize("move", MOVES, ids=lambda m: m.name)
def test_move_changes_only_rows_in_its_source_states(
    conn: sa.Connection, move: Move, status: JobStatus
) -> None:
    job = place_job(conn, status)
    before = read_row(conn, job.id)

    move.run(conn, job)

    after = read_row(conn, job.id)
    if status not in move.sources:
        assert after == before, f"{move.name} changed a {status} job"
    elif move.target is None:
        assert after is None
    else:
        assert after is not None
        assert after["status"] == move.target
        assert after["updated_at"] == T0


def test_claim_counts_the_attempt_and_takes_a_fresh_lease(conn: sa.Connection) -> None:
    job = place_job(conn, S.PENDING, attempts=0, max_attempts=None)

    [claimed] = queries.claim_batch(
        conn, worker_id="w1", limit=5, lease=LEASE, default_max_attempts=4,
        max_attempts_by_type={"other.type": 9}, now=T0,
    )  # fmt: skip

    assert (claimed.id, claimed.attempt, claimed.max_attempts) == (job.id, 1, 4)
    row = read_row(conn, job.id)
    assert row is not None
    assert row["locked_until"] == T0 + LEASE
    assert (row["locked_by"], row["lease_token"], row["started_at"]) == (
        "w1",
        claimed.lease_token,
        T0,
    )
    # Text, as every lease the worker keys its jobs by: a uuid.UUID would not find a str key.
    assert isinstance(claimed.lease_token, str)


def test_a_claim_starts_the_jobs_latency_at_its_publication_else_at_its_creation(
    conn: sa.Connection,
) -> None:
    created, published_at = T0 - timedelta(hours=1), T0 - timedelta(minutes=1)
    published = place_job(conn, S.PUBLISHED, attempts=0, created_at=created,
                          published_at=published_at)  # fmt: skip
    never_published = place_job(conn, S.PENDING, attempts=0, created_at=created)

    claimed = queries.claim_by_job_ids(
        conn, job_ids=[published.job_id, never_published.job_id], worker_id="w1", lease=LEASE,
        default_max_attempts=4, now=T0,
    )  # fmt: skip

    since = {c.job_id: c.since for c in claimed}
    assert since == {published.job_id: published_at, never_published.job_id: created}


def test_claim_takes_max_attempts_from_the_per_type_policy(conn: sa.Connection) -> None:
    place_job(conn, S.PENDING, attempts=0, max_attempts=None)
    [claimed] = queries.claim_batch(
        conn, worker_id="w", limit=1, lease=LEASE, default_max_attempts=4,
        max_attempts_by_type={"test.job": 9}, now=T0,
    )  # fmt: skip
    assert claimed.max_attempts == 9


def test_claim_orders_by_priority_then_due_time_then_id_and_skips_future_jobs(
    conn: sa.Connection,
) -> None:
    low_old = place_job(conn, S.PENDING, priority=0, run_at=T0 - timedelta(hours=2))
    high_recent = place_job(conn, S.PENDING, priority=5, run_at=T0 - timedelta(seconds=1))
    low_first = place_job(conn, S.PENDING, priority=0, run_at=T0 - timedelta(hours=3))
    low_same_due = place_job(conn, S.PENDING, priority=0, run_at=T0 - timedelta(hours=2))
    place_job(conn, S.PENDING, priority=9, run_at=T0 + timedelta(seconds=1))  # not due yet

    first = queries.claim_batch(
        conn, worker_id="w", limit=2, lease=LEASE, default_max_attempts=5, now=T0
    )
    rest = queries.claim_batch(
        conn, worker_id="w", limit=10, lease=LEASE, default_max_attempts=5, now=T0
    )

    assert {j.id for j in first} == {high_recent.id, low_first.id}
    assert [j.id for j in rest] == [low_old.id, low_same_due.id]


def test_claim_can_be_limited_to_types(conn: sa.Connection) -> None:
    place_job(conn, S.PENDING, type="a")
    wanted = place_job(conn, S.PENDING, type="b")
    claimed = queries.claim_batch(
        conn, worker_id="w", limit=10, lease=LEASE, default_max_attempts=5, types=["b"], now=T0
    )
    assert [j.id for j in claimed] == [wanted.id]


def test_a_zombie_cannot_complete_or_fail_a_job_it_no_longer_holds(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING)
    before = read_row(conn, job.id)
    stale = Lease(job.id, queries.new_lease_token())

    assert queries.mark_completed(conn, [queries.Completion(stale)], now=T0) == []
    assert not queries.schedule_retry(conn, stale, retry_in=LEASE, error="x", now=T0)
    assert not queries.dead_letter(conn, stale, error="x", now=T0)
    assert read_row(conn, job.id) == before


def test_completion_stores_the_result_and_releases_the_lease(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING)
    done = queries.mark_completed(conn, [queries.Completion(lease_of(job), '{"ok": true}')], now=T0)
    row = read_row(conn, job.id)
    assert done == [job.id]
    assert row is not None
    assert (row["result"], row["finished_at"], row["lease_token"], row["locked_by"]) == (
        {"ok": True}, T0, None, None,
    )  # fmt: skip


# Results as the outcome writer sends them: JSON texts inside one JSON document (queries.py).
AWKWARD_RESULTS = [
    None,
    "null",
    '"NULL"',
    '{"quote": "a\\"b", "backslash": "c\\\\d", "comma,brace}": "{1,2}"}',
    '["café", "😀", "\\ud83d\\ude00", "line\\nbreak", "tab\\t"]',
    '"\\u00e9 written escaped"',
    "12345678901234567890",
    "[]",
]


def test_a_batch_of_completions_stores_each_result_on_its_own_row(conn: sa.Connection) -> None:
    placed = [place_job(conn, S.PROCESSING) for _ in AWKWARD_RESULTS]
    completions = [
        queries.Completion(lease_of(job), result)
        for job, result in zip(placed, AWKWARD_RESULTS, strict=True)
    ]
    stale = place_job(conn, S.PROCESSING)
    completions.insert(3, queries.Completion(Lease(stale.id, queries.new_lease_token()), "[1]"))

    done = queries.mark_completed(conn, completions, now=T0)

    assert done == sorted(job.id for job in placed)
    stored = [conn.execute(
        sa.text("SELECT result::text FROM outbox_jobs WHERE id = :id"), {"id": job.id}
    ).scalar_one() for job in placed]  # fmt: skip
    expected = [conn.execute(sa.text("SELECT CAST(:r AS jsonb)::text"), {"r": r}).scalar_one()
                for r in AWKWARD_RESULTS]  # fmt: skip
    assert stored == expected
    assert stored[:2] == [None, "null"]  # no result stays NULL; a JSON null is stored as one
    assert status_of(conn, stale.id) is S.PROCESSING


def test_retry_is_due_after_the_delay_and_keeps_the_error(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING, attempts=1, max_attempts=3)
    assert queries.schedule_retry(
        conn, lease_of(job), retry_in=timedelta(seconds=8), error="boom", traceback="tb", now=T0
    )
    row = read_row(conn, job.id)
    assert row is not None
    assert (row["run_at"], row["last_error"], row["last_traceback"]) == (
        T0 + timedelta(seconds=8), "boom", "tb",
    )  # fmt: skip
    assert queries.promote_due_retries(conn, now=T0 + timedelta(seconds=7)) == 0
    assert queries.promote_due_retries(conn, now=T0 + timedelta(seconds=8)) == 1


def test_retry_is_refused_when_no_attempts_remain(conn: sa.Connection) -> None:
    job = place_job(conn, S.PROCESSING, attempts=3, max_attempts=3)
    assert not queries.schedule_retry(conn, lease_of(job), retry_in=LEASE, error="boom", now=T0)
    assert queries.dead_letter(conn, lease_of(job), error="boom", now=T0)
    row = read_row(conn, job.id)
    assert row is not None
    assert (row["status"], row["finished_at"]) == (S.DEAD, T0)


def test_rescue_returns_expired_leases_and_kills_jobs_out_of_attempts(conn: sa.Connection) -> None:
    retry = place_job(conn, S.PROCESSING, attempts=1, max_attempts=3)
    last = place_job(conn, S.PROCESSING, attempts=3, max_attempts=3)
    alive = place_job(conn, S.PROCESSING, locked_until=T0 + timedelta(seconds=5))

    rescued = queries.rescue_expired(conn, now=T0)

    assert [(r.id, r.status) for r in rescued] == [(retry.id, S.PENDING), (last.id, S.DEAD)]
    retried = read_row(conn, retry.id)
    assert retried is not None
    assert (retried["attempts"], retried["lease_token"]) == (1, None)  # the attempt stays counted
    assert status_of(conn, alive.id) is S.PROCESSING
    assert queries.mark_completed(conn, [queries.Completion(lease_of(retry))], now=T0) == []


def test_requeue_gives_dead_jobs_fresh_attempts_and_failed_jobs_keep_theirs(
    conn: sa.Connection,
) -> None:
    dead = place_job(conn, S.DEAD, attempts=3)
    failed = place_job(conn, S.FAILED, attempts=2, run_at=T0 + timedelta(hours=1))
    assert queries.requeue(conn, [dead.job_id, failed.job_id], now=T0) == sorted(
        [dead.job_id, failed.job_id]
    )
    rows = [read_row(conn, dead.id), read_row(conn, failed.id)]
    assert [(r["attempts"], r["run_at"], r["finished_at"]) for r in rows if r] == [
        (0, T0, None), (2, T0, None),
    ]  # fmt: skip


def test_prune_keeps_rows_younger_than_the_retention_and_honours_the_limit(
    conn: sa.Connection,
) -> None:
    old = [place_job(conn, S.COMPLETED, finished_at=T0 - timedelta(days=8)) for _ in range(3)]
    young = place_job(conn, S.COMPLETED, finished_at=T0 - timedelta(days=6))

    assert queries.prune_finished(conn, older_than=timedelta(days=7), limit=2, now=T0) == 2
    assert queries.prune_finished(conn, older_than=timedelta(days=7), limit=2, now=T0) == 1
    assert all(read_row(conn, j.id) is None for j in old)
    assert read_row(conn, young.id) is not None


def test_prune_refuses_live_states(conn: sa.Connection) -> None:
    with pytest.raises(ValueError, match="PENDING"):
        queries.prune_finished(conn, older_than=timedelta(0), statuses=[S.PENDING])


def test_publication_stores_the_receipt_and_time(conn: sa.Connection) -> None:
    job = place_job(conn, S.PENDING)
    receipt = {"topic": "jobs", "partition": 2, "offset": 41}
    assert queries.mark_published(conn, [queries.PublishReceipt(job.id, receipt)], now=T0) == [
        job.id
    ]
    row = read_row(conn, job.id)
    assert row is not None
    assert (row["publish_receipt"], row["published_at"]) == (receipt, T0)


def test_a_broker_delivery_of_a_job_not_yet_due_claims_nothing(conn: sa.Connection) -> None:
    job = place_job(conn, S.PENDING, run_at=T0 + timedelta(minutes=1))
    claimed = queries.claim_by_job_ids(
        conn, job_ids=[job.job_id], worker_id="w", lease=LEASE, default_max_attempts=5, now=T0
    )
    assert claimed == []
