"""`outbox jobs retry|cancel|requeue-dead|purge` and `outbox audit list` on a real database:
previews change nothing, --yes changes exactly the matched rows in audited batches, the change
and its audit row commit together, and illegal moves are never made."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from outbox import queries
from outbox.cli.bulk_action import BulkAction, apply
from outbox.cli.pacing import Pacer
from outbox.failpoints import FailpointError
from outbox.job_record import JobRecord
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.jobs_on_disk import stored_job
from tests.operator_cli import audit_json, audit_rows, invoke, place, statuses

S = JobStatus
COMMANDS = (
    ("jobs", "retry"), ("jobs", "cancel"), ("jobs", "requeue-dead"),
    ("jobs", "purge", "--older-than", "7d"), ("replay",),
)  # fmt: skip


def test_preview_prints_the_count_and_ten_rows_and_changes_nothing(
    database_url: str, engine: Engine
) -> None:
    dead = place(engine, S.DEAD, 12)
    result = invoke(database_url, "jobs", "retry", "--status", "DEAD", "--reason", "fixed")
    assert result.exit_code == 0, result.output
    assert "retry would take 12 jobs: DEAD -> PENDING" in result.stdout
    assert "first 10 of 12, oldest first" in result.stdout
    assert all(j in result.stdout for j in dead[:10])
    assert not any(j in result.stdout for j in dead[10:])
    assert "nothing changed" in result.stdout
    assert statuses(engine, dead) == ["DEAD"] * 12
    assert audit_rows(engine) == []


def test_yes_changes_exactly_the_matched_rows_with_one_audit_row_per_batch(
    database_url: str, engine: Engine
) -> None:
    mine = place(engine, S.DEAD, 7, type="mail", attempts=3)
    other_type = place(engine, S.DEAD, 2, type="sms")
    failed = place(engine, S.FAILED, 1, type="mail")
    result = invoke(database_url, "jobs", "requeue-dead", "--type", "mail", "--batch-size", "3",
                    "--reason", "SMTP fixed", "--actor", "alice", "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "requeue-dead: changed 7 of 7 matched jobs in 3 audited batches" in result.stdout
    assert statuses(engine, mine) == ["PENDING"] * 7
    assert {stored_job(engine, j).attempts for j in mine} == {0}
    assert statuses(engine, other_type + failed) == ["DEAD", "DEAD", "FAILED"]
    rows = audit_rows(engine)
    assert [(r.actor, r.action, r.count, r.reason) for r in rows] == [
        ("alice", "requeue-dead", 3, "SMTP fixed"), ("alice", "requeue-dead", 3, "SMTP fixed"),
        ("alice", "requeue-dead", 1, "SMTP fixed"),
    ]  # fmt: skip
    assert rows[0].filter["type"] == "mail"
    assert rows[0].filter["statuses"] == ["DEAD"]


def test_retry_resets_attempts_of_dead_and_cancelled_jobs_only_as_the_gateway_does(
    database_url: str, engine: Engine
) -> None:
    dead = place(engine, S.DEAD, attempts=3, key="k")
    cancelled = place(engine, S.CANCELLED, attempts=1, key="k")
    failed = place(engine, S.FAILED, attempts=2, key="k")
    published = place(engine, S.PUBLISHED, attempts=1, key="k")
    result = invoke(database_url, "jobs", "retry", "--key", "k", "--reason", "r", "--yes")
    assert result.exit_code == 0, result.output
    moved = dead + cancelled + failed
    assert [(stored_job(engine, j).status, stored_job(engine, j).attempts) for j in moved] == [
        ("PENDING", 0), ("PENDING", 0), ("PENDING", 2),
    ]  # fmt: skip
    assert statuses(engine, published) == ["PUBLISHED"]  # only with --status PUBLISHED
    again = invoke(database_url, "jobs", "retry", "--key", "k", "--status", "published",
                   "--reason", "broker lost it", "--yes")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert statuses(engine, published) == ["PENDING"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[-1] if len(c) < 3 else c[1])
@pytest.mark.parametrize("reason", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_a_missing_or_blank_reason_is_refused_naming_the_option(
    database_url: str, engine: Engine, command: tuple[str, ...], reason: str | None
) -> None:
    dead = place(engine, S.DEAD, finished_at=datetime.now(UTC) - timedelta(days=30))
    given = () if reason is None else ("--reason", reason)
    result = invoke(database_url, *command, *given, "--yes")
    assert result.exit_code == 2
    assert "--reason" in result.stderr
    assert statuses(engine, dead) == ["DEAD"]
    assert audit_rows(engine) == []


def test_cancel_never_touches_a_processing_job_and_says_so(
    database_url: str, engine: Engine
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    movable = place(engine, S.PENDING, key="k") + place(engine, S.FAILED, key="k")
    leased = place(engine, S.PROCESSING, key="k", locked_until=soon)
    done = place(engine, S.COMPLETED, key="k")
    result = invoke(database_url, "jobs", "cancel", "--key", "k", "--reason", "customer left",
                    "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cancel: changed 2 of 2 matched jobs" in result.stdout
    assert "PROCESSING jobs are never cancelled" in result.stdout
    assert "1 matching PROCESSING jobs are left alone" in result.stdout
    assert statuses(engine, movable + leased + done) == [
        "CANCELLED", "CANCELLED", "PROCESSING", "COMPLETED",
    ]  # fmt: skip
    assert stored_job(engine, movable[0]).last_error == "customer left"
    assert stored_job(engine, leased[0]).locked_until == soon
    refused = invoke(database_url, "jobs", "cancel", "--status", "PROCESSING", "--reason", "r")
    assert refused.exit_code == 1
    assert "cancel moves only FAILED, PENDING, PUBLISHED jobs, not PROCESSING" in refused.stderr


def test_a_failure_between_change_and_audit_rolls_back_the_batch_and_keeps_the_earlier_ones(
    database_url: str, engine: Engine
) -> None:
    dead = place(engine, S.DEAD, 4)
    args = ("jobs", "requeue-dead", "--batch-size", "2", "--reason", "r", "--yes")
    result = invoke(database_url, *args, OUTBOX_FAILPOINTS="operator.after_change=raise:2")
    assert isinstance(result.exception, FailpointError)
    assert statuses(engine, dead) == ["PENDING", "PENDING", "DEAD", "DEAD"]
    assert [r.count for r in audit_rows(engine)] == [2]  # batch 1: change and audit committed

    late = invoke(database_url, *args, OUTBOX_FAILPOINTS="operator.after_audit=raise:1")
    assert isinstance(late.exception, FailpointError)  # audit written, then the batch failed
    assert statuses(engine, dead) == ["PENDING", "PENDING", "DEAD", "DEAD"]
    assert [r.count for r in audit_rows(engine)] == [2]


def test_a_refused_audit_row_leaves_the_jobs_unchanged(database_url: str, engine: Engine) -> None:
    dead = place(engine, S.DEAD, 3)
    with engine.begin() as conn:  # make every audit insert fail
        conn.execute(sa.text("ALTER TABLE outbox_audit ADD CONSTRAINT refuse CHECK (false)"))
    result = invoke(database_url, "jobs", "requeue-dead", "--reason", "r", "--yes")
    assert isinstance(result.exception, sa.exc.IntegrityError)
    assert statuses(engine, dead) == ["DEAD"] * 3


def test_a_row_changed_after_its_batch_was_read_is_not_matched(engine: Engine) -> None:
    dead = place(engine, S.DEAD, 3)

    def others_first(conn: Connection, batch: Sequence[JobRecord]) -> list[str]:
        first = batch[0].job_id
        with engine.begin() as other:  # the gateway and a worker, between our read and update
            queries.requeue(other, [first])
            lease = timedelta(seconds=30)
            queries.claim_by_job_ids(
                other, job_ids=[first], worker_id="w", lease=lease, default_max_attempts=3
            )
        return queries.requeue(conn, [r.job_id for r in batch], sources={S.DEAD})

    action = BulkAction(
        "requeue-dead", queries.JobFilter(statuses=frozenset({S.DEAD})),
        others_first,
    )  # fmt: skip
    with engine.connect() as conn:
        outcome = apply(conn, action, actor="t", reason="r", batch_size=10, pacer=Pacer(1000))
    assert (outcome.matched, outcome.changed, outcome.batches) == (3, 2, 1)
    assert statuses(engine, dead) == ["PROCESSING", "PENDING", "PENDING"]
    assert [r.count for r in audit_rows(engine)] == [2]


def test_purge_deletes_only_finished_rows_older_than_the_bound(
    database_url: str, engine: Engine
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    young = datetime.now(UTC) - timedelta(days=1)
    gone = [
        j for s in (S.COMPLETED, S.DEAD, S.CANCELLED) for j in place(engine, s, finished_at=old)
    ]
    kept = place(engine, S.COMPLETED, finished_at=young)
    live = [j for s in (S.PENDING, S.PUBLISHED, S.PROCESSING, S.FAILED)
            for j in place(engine, s, finished_at=old)]  # fmt: skip
    preview = invoke(database_url, "jobs", "purge", "--older-than", "7d", "--reason", "space")
    assert "purge would take 3 jobs" in preview.stdout
    assert statuses(engine, gone) == ["COMPLETED", "DEAD", "CANCELLED"]

    result = invoke(database_url, "jobs", "purge", "--older-than", "7d", "--reason", "space",
                    "--yes")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "purge: deleted 3 of 3 matched jobs in 1 audited batches" in result.stdout
    assert statuses(engine, gone) == ["gone"] * 3
    assert statuses(engine, kept + live) == ["COMPLETED", "PENDING", "PUBLISHED", "PROCESSING",
                                              "FAILED"]  # fmt: skip
    [row] = audit_rows(engine)
    assert (row.action, row.count, row.filter["older_than"]) == ("purge", 3, "7d")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("jobs", "purge", "--older-than", "7 days"), "--older-than"),
        (("jobs", "purge", "--older-than", "7d", "--status", "FAILED"), "--status"),
        (("jobs", "retry", "--since", "2026-01-01T00:00:00"), "--since"),
        (("jobs", "retry", "--until", "yesterday"), "--until"),
        (("jobs", "retry", "--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"),
         "--since"),
        (("jobs", "retry", "--status", "BOGUS"), "--status"),
        (("jobs", "retry", "--status", "COMPLETED"), "--status"),
        (("replay", "--status", "DEAD"), "--status"),
        (("replay", "--to-topic", " "), "--to-topic"),
    ],
)  # fmt: skip
def test_a_bad_filter_exits_1_naming_it_and_changes_nothing(
    database_url: str, engine: Engine, args: tuple[str, ...], named: str
) -> None:
    dead = place(engine, S.DEAD, finished_at=datetime.now(UTC) - timedelta(days=30))
    result = invoke(database_url, *args, "--reason", "r", "--yes")
    assert result.exit_code == 1, result.output
    assert named in result.stderr
    assert statuses(engine, dead) == ["DEAD"]


def test_time_range_takes_any_utc_offset_postgresql_refuses_or_not(
    database_url: str, engine: Engine
) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    ten, noon, two = (
        place(engine, S.DEAD, created_at=day + timedelta(hours=h))[0] for h in (10, 12, 14)
    )
    # 16:30+05:30 is 11:00Z; 21:00-15:59 and 13:00-23:59 (past PostgreSQL's ±15:59) are 12:59Z.
    for until in ("2026-02-28T21:00:00-15:59", "2026-02-28T13:00:00-23:59"):
        result = invoke(database_url, "jobs", "requeue-dead", "--reason", "r",
                        "--since", "2026-03-01T16:30:00+05:30", "--until", until)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "would take 1 jobs" in result.stdout
        assert noon in result.stdout
        assert ten not in result.stdout
        assert two not in result.stdout


def test_max_rate_paces_the_batches(database_url: str, engine: Engine) -> None:
    place(engine, S.DEAD, 40)
    started = time.monotonic()
    result = invoke(database_url, "jobs", "requeue-dead", "--batch-size", "100", "--max-rate",
                    "20", "--reason", "r", "--yes")  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "in 2 audited batches" in result.stdout  # a batch is at most one second's worth
    assert elapsed >= 1.9  # 40 rows at 20 rows/s


def test_audit_list_shows_the_actions_newest_first(database_url: str, engine: Engine) -> None:
    place(engine, S.DEAD, 2)
    place(engine, S.PENDING, 1, type="sms")
    assert invoke(database_url, "jobs", "requeue-dead", "--reason", "fixed", "--actor", "bob",
                  "--yes").exit_code == 0  # fmt: skip
    assert invoke(database_url, "jobs", "cancel", "--type", "sms", "--reason", "spam",
                  "--yes").exit_code == 0  # fmt: skip
    everything = audit_json(database_url)
    assert [(r["action"], r["count"], r["reason"]) for r in everything] == [
        ("cancel", 1, "spam"), ("requeue-dead", 2, "fixed"),
    ]  # fmt: skip
    assert everything[1]["actor"] == "bob"
    assert "@" in everything[0]["actor"]  # $USER@hostname by default
    assert everything[0]["filter"]["type"] == "sms"
    assert [r["action"] for r in audit_json(database_url, "--action", "cancel")] == ["cancel"]
    assert audit_json(database_url, "--since", "2999-01-01T00:00:00+05:30") == []
    assert [r["action"] for r in audit_json(database_url, "--limit", "1")] == ["cancel"]
    table = invoke(database_url, "audit", "list")
    assert table.exit_code == 0
    assert "requeue-dead" in table.stdout
    assert "spam" in table.stdout


def test_nothing_matched_changes_nothing_and_writes_no_audit(
    database_url: str, engine: Engine
) -> None:
    place(engine, S.COMPLETED, 2)
    result = invoke(database_url, "jobs", "cancel", "--reason", "r", "--yes")
    assert result.exit_code == 0, result.output
    assert "cancel: changed 0 of 0 matched jobs in 0 audited batches" in result.stdout
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 2
    assert audit_rows(engine) == []
