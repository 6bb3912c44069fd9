"""Values of the operator commands: times with any UTC offset, durations, reasons, pacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer

from outbox.cli.options import aware_datetime, default_actor, duration, required_reason
from outbox.cli.pacing import Pacer


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-03-01T16:30:00+05:30", datetime(2026, 3, 1, 11, 0, tzinfo=UTC)),
        ("2026-02-28T21:00:00-15:59", datetime(2026, 3, 1, 12, 59, tzinfo=UTC)),
        ("2026-02-28T13:00:00-23:59", datetime(2026, 3, 1, 12, 59, tzinfo=UTC)),
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
        ("2026-03-01 17:45+0545", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_a_time_with_any_offset_is_the_same_instant_in_utc(text: str, utc: datetime) -> None:
    parsed = aware_datetime(text, "--since")
    assert parsed == utc
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)  # PostgreSQL refuses offsets past ±15:59


@pytest.mark.parametrize("text", ["2026-03-01T12:00:00", "yesterday", "2026-13-01T00:00Z"])
def test_a_time_without_a_zone_or_unparseable_names_the_option(text: str) -> None:
    with pytest.raises(typer.BadParameter) as refused:
        aware_datetime(text, "--until")
    assert "--until" in refused.value.format_message()


@pytest.mark.parametrize(
    ("text", "span"),
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
     ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), ("0s", timedelta(0))],
)  # fmt: skip
def test_durations(text: str, span: timedelta) -> None:
    assert duration(text, "--older-than") == span


@pytest.mark.parametrize("text", ["", "7", "7 days", "-1d", "1.5h", "d"])
def test_a_bad_duration_names_the_option(text: str) -> None:
    with pytest.raises(typer.BadParameter) as refused:
        duration(text, "--older-than")
    assert "--older-than" in refused.value.format_message()


def test_a_blank_reason_is_refused_naming_the_option() -> None:
    assert required_reason("  INC-381 ") == "INC-381"
    with pytest.raises(typer.BadParameter) as refused:
        required_reason(" \t ")
    assert "--reason" in refused.value.format_message()


def test_the_default_actor_is_user_at_host() -> None:
    user, _, host = default_actor().partition("@")
    assert user
    assert host


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_sleeps_until_the_rows_done_are_due_at_the_rate() -> None:
    fake = FakeTime()
    pacer = Pacer(100, clock=fake.clock, sleep=fake.sleep)
    fake.now += 0.2  # the batch of 50 took 0.2 s; 50 rows at 100/s are due at 0.5 s
    assert pacer.after(50) == pytest.approx(0.3)
    fake.now += 0.7  # a slow batch: behind the rate, so no sleep
    assert pacer.after(50) == 0.0
    assert fake.slept == [pytest.approx(0.3)]


def test_a_batch_is_at_most_one_seconds_worth_of_rows() -> None:
    assert Pacer(1000).batch_size(500) == 500
    assert Pacer(20).batch_size(500) == 20
    assert Pacer(0.5).batch_size(500) == 1
    with pytest.raises(ValueError):
        Pacer(0)
