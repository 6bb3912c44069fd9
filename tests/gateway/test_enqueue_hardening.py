"""What the fuzzer taught the core: strings and times PostgreSQL refuses are refused (or made
acceptable) before the database, for in-process callers of gateway.enqueue too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.engine import Engine

import gateway
from outbox import queries


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
