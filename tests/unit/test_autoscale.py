"""The autoscaler's decisions, driven by explicit samples: no threads, no clock, no database."""

from __future__ import annotations

from typing import Any

import pytest

from worker.autoscale import Autoscaler, Sample, ScalePolicy, ScaleState, decide

POLICY = ScalePolicy(minimum=1, maximum=16, grow_after=4.0, shrink_after=30.0, cooldown=10.0)


def run(policy: ScalePolicy, start: int, samples: list[tuple[float, int, int]]) -> list[int]:
    """Feed (at, backlog, peak_busy) samples, carrying the size along; the size after each."""
    scaler, size, sizes = Autoscaler(policy), start, []
    for at, backlog, busy in samples:
        size = scaler.observe(Sample(at, backlog, min(busy, size), size))
        sizes.append(size)
    return sizes


def test_a_fixed_size_never_changes_whatever_the_backlog() -> None:
    fixed = ScalePolicy(minimum=4, maximum=4, grow_after=0, shrink_after=0, cooldown=0)
    assert run(fixed, 4, [(0, 1000, 4), (1, 1000, 4), (2, 0, 0), (3, 0, 0)]) == [4, 4, 4, 4]


def test_grows_only_once_the_pressure_has_lasted_grow_after() -> None:
    sizes = run(POLICY, 2, [(0, 50, 2), (2, 50, 2), (4, 50, 2)])
    assert sizes == [2, 2, 4]


def test_a_break_in_the_pressure_starts_the_window_again() -> None:
    sizes = run(POLICY, 2, [(0, 50, 2), (2, 1, 2), (4, 50, 2), (6, 50, 2), (8, 50, 2)])
    assert sizes == [2, 2, 2, 2, 4]  # pressure again from t=4, so growth at t=8


def test_a_backlog_with_idle_slots_does_not_grow_the_pool() -> None:
    # Jobs held back by their type's own concurrency cap or rate limit: more threads cannot help.
    sizes = run(POLICY, 4, [(0, 500, 2), (5, 500, 2), (10, 500, 2)])
    assert sizes == [4, 4, 4]


def test_a_backlog_at_or_below_the_threshold_does_not_grow_the_pool() -> None:
    assert run(POLICY, 4, [(0, 4, 4), (5, 4, 4), (10, 4, 4)]) == [4, 4, 4]


@pytest.mark.parametrize(
    ("size", "backlog", "grown"),
    [
        (4, 5, 5),  # towards backlog / backlog_per_slot: 5 slots
        (4, 6, 6),
        (4, 500, 8),  # at most double in one step
        (1, 2, 2),
        (12, 500, 16),  # never past the maximum
        (16, 500, 16),
    ],
)
def test_growth_follows_the_backlog_at_most_doubling_within_the_maximum(
    size: int, backlog: int, grown: int
) -> None:
    assert run(POLICY, size, [(0, backlog, size), (4, backlog, size)])[-1] == grown


def test_backlog_per_slot_sets_the_target() -> None:
    policy = ScalePolicy(minimum=1, maximum=64, backlog_per_slot=10, grow_after=0, cooldown=0)
    assert run(policy, 4, [(0, 41, 4)]) == [5]  # 41 > 10 * 4; ceil(41 / 10) slots
    assert run(policy, 4, [(0, 40, 4)]) == [4]


def test_cooldown_holds_the_next_change_back() -> None:
    sizes = run(POLICY, 2, [(0, 500, 2), (4, 500, 2), (8, 500, 4), (12, 500, 4), (14, 500, 4)])
    # grown at 4; the pressure window restarts at 8 and lasts from 12; cooled down at 14
    assert sizes == [2, 4, 4, 4, 8]


def test_shrinks_to_the_busiest_moment_of_the_idle_window() -> None:
    samples = [(0, 0, 3), (10, 0, 5), (20, 0, 2), (30, 0, 1)]
    assert run(POLICY, 8, samples) == [8, 8, 8, 5]


def test_never_shrinks_below_the_minimum() -> None:
    policy = ScalePolicy(minimum=2, maximum=8, shrink_after=30, cooldown=10)
    assert run(policy, 8, [(0, 0, 0), (30, 0, 0)]) == [8, 2]


def test_a_fully_busy_sample_ends_the_idle_window() -> None:
    samples = [(0, 0, 1), (20, 0, 8), (30, 0, 1), (50, 0, 1), (60, 0, 1)]
    assert run(POLICY, 8, samples) == [8, 8, 8, 8, 1]


def test_a_size_outside_the_bounds_is_brought_inside_at_once() -> None:
    policy = ScalePolicy(minimum=2, maximum=4)
    assert decide(policy, ScaleState(), Sample(0, 0, 0, 9)) == (4, ScaleState(changed_at=0))
    assert decide(policy, ScaleState(), Sample(0, 0, 0, 1))[0] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"minimum": 0, "maximum": 4},
        {"minimum": 5, "maximum": 4},
        {"minimum": 1, "maximum": 4, "backlog_per_slot": 0},
        {"minimum": 1, "maximum": 4, "cooldown": -1},
    ],
)
def test_a_policy_out_of_range_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ScalePolicy(**bad)
