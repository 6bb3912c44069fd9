"""gateway.enqueue joins the caller's transaction: rolled back, no row; committed, exactly one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import gateway
from outbox import queries
from outbox.database import libpq_conninfo
from outbox.schema import jobs
from tests.statement_counter import count_statements


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()


def test_rolled_back_session_leaves_no_job(engine: Engine) -> None:
    with Session(engine) as session:
        gateway.enqueue(session, "email.send", {"to": "a@example.com"})
        session.rollback()
    assert _count(engine) == 0


def test_committed_session_leaves_exactly_one_job(engine: Engine) -> None:
    with Session(engine) as session:
        job_id = gateway.enqueue(session, "email.send", {"to": "a@example.com"})
        session.commit()
    with engine.connect() as conn:
        record = queries.get_job(conn, job_id)
    assert _count(engine) == 1
    assert record is not None
    assert (record.type, record.payload, record.key, record.status) == (
        "email.send", {"to": "a@example.com"}, job_id, "PENDING",
    )  # fmt: skip


def test_enqueue_never_commits_the_callers_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        gateway.enqueue(conn, "email.send", {})
        assert conn.in_transaction()
        conn.rollback()
    assert _count(engine) == 0


def test_business_row_and_job_commit_or_vanish_together(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE reservations (id int PRIMARY KEY)"))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO reservations VALUES (1)"))
        gateway.enqueue(conn, "reservation.created", {"id": 1})
        conn.execute(sa.text("INSERT INTO reservations VALUES (1)"))  # the business write fails
    assert _count(engine) == 0


def test_same_job_id_and_content_is_a_no_op(engine: Engine) -> None:
    for _ in range(2):
        with engine.begin() as conn:
            gateway.enqueue(conn, "t", {"a": 1, "b": [1, 2]}, job_id="order-1", priority=3)
    with engine.begin() as conn:  # key order in JSON does not make content different
        gateway.enqueue(conn, "t", {"b": [1, 2], "a": 1}, job_id="order-1")
    assert _count(engine) == 1


@pytest.mark.parametrize(
    ("change", "value"),
    [("type", "other"), ("payload", {"a": 2}), ("key", "k2"), ("topic", "elsewhere")],
)
def test_same_job_id_with_other_content_names_the_job_id(
    engine: Engine, change: str, value: object
) -> None:
    first = {"type": "t", "payload": {"a": 1}, "key": "k1", "topic": None}
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec(**first, job_id="order-7")])  # type: ignore[arg-type]
    with pytest.raises(gateway.JobConflictError, match="order-7") as caught, engine.begin() as conn:
        spec = gateway.JobSpec(**(first | {change: value}), job_id="order-7")  # type: ignore[arg-type]
        gateway.enqueue_many(conn, [spec])
    assert caught.value.job_ids == ["order-7"]
    assert _count(engine) == 1


def test_enqueue_many_is_one_round_trip_and_keeps_order(engine: Engine) -> None:
    specs = [gateway.JobSpec("bulk", {"i": i}, key=f"k{i % 3}") for i in range(500)]
    with engine.begin() as conn, count_statements(engine) as sent:
        job_ids = gateway.enqueue_many(conn, specs)
    assert len(sent) == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.job_id, jobs.c.payload).order_by(jobs.c.id)).all()
    assert [r.job_id for r in rows] == job_ids
    assert [r.payload["i"] for r in rows] == list(range(500))


def test_enqueue_stores_every_option(engine: Engine) -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as conn:
        job_id = gateway.enqueue(
            conn, "t", [1, "x"], job_id="j-1", key="user-9", priority=7, run_at=run_at,
            max_attempts=2, headers={"traceparent": "00-abc-def-01"}, topic="billing",
        )  # fmt: skip
        record = queries.get_job(conn, job_id)
    assert record is not None
    assert (record.key, record.priority, record.run_at, record.max_attempts, record.topic) == (
        "user-9", 7, run_at, 2, "billing",
    )  # fmt: skip
    assert record.headers == {"traceparent": "00-abc-def-01"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "has space"}, "type"),
        ({"payload": {"f": object()}}, "payload"),
        ({"payload": {"name": "a\x00b"}}, "payload.name"),
        ({"payload": float("nan")}, "payload"),
        ({"priority": -1}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),  # naive on purpose
        ({"payload": "x" * 2_000_000}, "payload"),
        ({"job_id": ""}, "job_id"),
        ({"headers": {"h": "a\x00"}}, "headers.h"),
        # Strings and times PostgreSQL would refuse (found by the gateway's schemathesis run):
        ({"payload": {"s": "a\ud800"}}, "payload.s"),
        ({"payload": {"k\udfff": 1}}, "payload (a key)"),
        ({"job_id": "j\ud800"}, "job_id"),
        ({"key": "\udc00"}, "key"),
        ({"headers": {"h": "\ud800"}}, "headers"),
        ({"run_at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "run_at"),
    ],
)
def test_bad_input_is_refused_before_the_database_is_touched(
    engine: Engine, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"type": "t", "payload": {}} | kwargs
    with engine.connect() as conn, count_statements(engine) as sent:
        with pytest.raises(gateway.InvalidJobError) as caught:
            gateway.enqueue(conn, **args)  # type: ignore[arg-type]
        conn.rollback()
    assert caught.value.field == field
    assert sent == []


def test_enqueue_many_names_the_position_of_a_bad_job(engine: Engine) -> None:
    specs = [gateway.JobSpec("t", {}), gateway.JobSpec("t", {}, priority=-5)]
    with engine.connect() as conn, pytest.raises(gateway.InvalidJobError) as caught:
        gateway.enqueue_many(conn, specs)
    assert caught.value.field == "jobs[1].priority"


def test_one_batch_with_a_job_id_twice_and_two_contents_is_refused(engine: Engine) -> None:
    specs = [gateway.JobSpec("t", {"a": 1}, job_id="x"), gateway.JobSpec("t", {"a": 2}, job_id="x")]
    with engine.connect() as conn, pytest.raises(gateway.InvalidJobError, match="jobs\\[1\\]"):
        gateway.enqueue_many(conn, specs)


def test_a_commit_wakes_listeners_and_a_rollback_does_not(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as listener:
        listener.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
        with engine.connect() as conn:
            gateway.enqueue(conn, "t", {})
            conn.rollback()
        assert list(listener.notifies(timeout=0.3)) == []
        with engine.begin() as conn:
            gateway.enqueue_many(conn, [gateway.JobSpec("t", {}) for _ in range(3)])
        woken = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in woken] == [queries.NOTIFY_CHANNEL]


def test_notify_can_be_switched_off(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as listener:
        listener.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
        with engine.begin() as conn:
            gateway.enqueue(conn, "t", {}, notify=False)
        assert list(listener.notifies(timeout=0.3)) == []
    assert _count(engine) == 1


def test_a_job_due_later_is_stored_with_its_time(engine: Engine) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "t", {}, run_at=later)
        record = queries.get_job(conn, job_id)
    assert record is not None
    assert record.run_at == later


EDGE_SPECS = [
    # Every kind of value each column takes, in awkward spellings: the batch path sends them
    # as one JSON document, the single path as plain parameters; both must store the same.
    gateway.JobSpec("edge.null", None),
    gateway.JobSpec("edge.scalar", 'a "quoted" \\ back\\slash\n\ttab é 😀'),
    gateway.JobSpec("edge.number", 1.5e300, key='k "q" \\ é', topic="billing.v2"),
    gateway.JobSpec("edge.list", [None, True, 0, -1, "x"], priority=32767, max_attempts=1000),
    gateway.JobSpec(
        "edge.when",
        {"nested": {"a": [{}]}},
        job_id="id with spaces/é",
        run_at=datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=-9))),
        headers={"traceparent": "00-abc-def-01", "x-é": 'ü "v"'},
    ),
]


def _stored(engine: Engine, job_ids: list[str]) -> list[tuple[object, ...]]:
    columns = (jobs.c.type, jobs.c.payload, jobs.c.key, jobs.c.topic, jobs.c.priority,
               jobs.c.max_attempts, jobs.c.headers)  # fmt: skip
    with engine.connect() as conn:
        by_id = {r.job_id: r for r in conn.execute(sa.select(jobs.c.job_id, *columns)).all()}
    # The default key is the job's own id, which differs between the two enqueues by design.
    return [
        (r.type, r.payload, "=job_id" if r.key == r.job_id else r.key, *tuple(r)[4:])
        for r in (by_id[job_id] for job_id in job_ids)
    ]


def test_enqueue_many_stores_every_value_exactly_as_enqueue_does(engine: Engine) -> None:
    with engine.begin() as conn:
        one_by_one = [gateway.enqueue(conn, s.type, s.payload, key=s.key, topic=s.topic,
                                      priority=s.priority, max_attempts=s.max_attempts,
                                      headers=s.headers) for s in EDGE_SPECS]  # fmt: skip
        batch = gateway.enqueue_many(conn, EDGE_SPECS)
        stored = conn.execute(sa.select(jobs.c.job_id, jobs.c.run_at)).all()
    run_ats = {r.job_id: r.run_at for r in stored}
    assert _stored(engine, batch) == _stored(engine, one_by_one)
    assert _stored(engine, batch)[0][1] is None  # a JSON null payload, not a refused NULL
    assert run_ats["id with spaces/é"] == EDGE_SPECS[-1].run_at
