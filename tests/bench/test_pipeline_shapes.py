"""``bench/pipeline_shapes.py`` on a tiny backlog: every shape drains every job exactly once.

The shapes are cut-down pipelines; what makes their figures worth comparing is that each one
completes every job it claims, once, and ends: a shape that dropped the last batch's
completions, or completed a job twice, would fail the drain's check.
"""

from __future__ import annotations

import pytest

from bench import pipeline_shapes
from bench.drains import DrainFailed

JOBS = 300


@pytest.mark.parametrize("name", list(pipeline_shapes.SHAPES))
def test_each_shape_completes_every_job_once(database_url: str, name: str) -> None:
    rate = pipeline_shapes.drain_once(database_url, pipeline_shapes.SHAPES[name], JOBS, 20)

    assert rate > 0


def test_the_check_catches_a_shape_that_leaves_jobs_unfinished(database_url: str) -> None:
    def claims_and_never_completes(url: str, concurrency: int) -> float:
        with pipeline_shapes.raw_limits.connect(url) as conn:
            conn.execute(pipeline_shapes.CLAIM, {"claim": concurrency})
        return 1.0

    with pytest.raises(DrainFailed, match="COMPLETED after one attempt"):
        pipeline_shapes.drain_once(database_url, claims_and_never_completes, JOBS, 20)


def test_ratios_are_paired_by_round() -> None:
    first, *others = pipeline_shapes.SHAPES
    rates = {first: [100.0, 200.0, 400.0]} | {name: [150.0, 200.0, 200.0] for name in others}

    drains = pipeline_shapes.Drains(rates)

    assert drains.paired_ratio(first) == 1.0
    assert drains.paired_ratio(others[0]) == 1.0  # 1.5, 1.0, 0.5: the median pair, not the medians
