"""What the fuzzer taught the core: strings and times PostgreSQL refuses are refused (or made
acceptable) before the database, for in-process callers of gateway.enqueue too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from tests.statement_counter import count_statements


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"payload": {"s": "a\ud800"}}, "payload.s"),
        ({"payload": {"k\udfff": 1}}, "payload (a key)"),
        ({"job_id": "j\ud800"}, "job_id"),
        ({"key": "\udc00"}, "key"),
        ({"headers": {"h": "\ud800"}}, "headers"),
        ({"run_at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "run_at"),
    ],
)
def test_unpaired_surrogates_and_unrepresentable_times_never_reach_the_database(
    engine: Engine, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"type": "t", "payload": {}} | kwargs
    with engine.connect() as conn, count_statements(engine) as sent:
        with pytest.raises(gateway.InvalidJobError) as caught:
            gateway.enqueue(conn, **args)  # type: ignore[arg-type]
        conn.rollback()
    assert caught.value.field == field
    assert sent == []


def test_characters_beyond_the_basic_plane_are_fine(engine: Engine) -> None:
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "t", {"emoji": "\U0001f600", "cjk": "漢字"}, key="키")
        record = queries.get_job(conn, job_id)
    assert record is not None
    assert record.payload == {"emoji": "\U0001f600", "cjk": "漢字"}


def test_a_run_at_offset_postgresql_refuses_is_stored_as_the_same_instant(engine: Engine) -> None:
    far_west = datetime(2031, 1, 1, tzinfo=timezone(-timedelta(hours=23, minutes=10)))
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "t", {}, run_at=far_west)
        record = queries.get_job(conn, job_id)
    assert record is not None
    assert record.run_at == far_west
    assert record.run_at == datetime(2031, 1, 1, 23, 10, tzinfo=UTC)
