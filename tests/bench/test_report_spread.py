"""The suite table's spread: how far a row's runs lie apart, so a run on a busy machine shows."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench.report import Row, Sample, show, to_json

MACHINE = {"date": "today", "cores": 2, "cpu": "test", "postgresql": "18"}


def row(*values: float) -> Row:
    return Row("worker, table source", "jobs/s", samples=[Sample(v) for v in values])


def test_spread_is_the_range_of_the_runs_over_their_median() -> None:
    assert row(17_102, 13_704, 19_129).spread() == pytest.approx((19_129 - 13_704) / 17_102)
    assert row(5.0, 5.0, 5.0).spread() == 0.0


def test_a_row_of_one_run_has_no_spread() -> None:
    assert row(100.0).spread() is None
    assert row().spread() is None


def test_spread_is_in_the_json_and_the_printed_table() -> None:
    rows = [row(100.0, 150.0, 200.0), row(42.0)]
    meta = {"machine": MACHINE, "quick": False, "runs": 3}

    document = to_json(rows, meta)
    console = Console(record=True, width=250)
    show(rows, meta, console)

    assert [r["spread"] for r in document["rows"]] == [pytest.approx(0.667, abs=1e-3), None]
    assert " 67% " in console.export_text()
