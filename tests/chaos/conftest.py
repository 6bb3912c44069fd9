"""Sizes of the fault-injection scenarios, and where their reports go.

The default test command runs the short size; ``make chaos`` sets ``CHAOS_SIZE=full``. Each
scenario's summary line is printed at the end of the run, and its JSON report is written to
``$CHAOS_REPORT_DIR`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.checker import Report

FULL = os.environ.get("CHAOS_SIZE", "short") == "full"
_summaries: list[str] = []


@dataclass(frozen=True)
class Size:
    transactions: int
    rate: float  # business transactions offered per second
    storm_seconds: float  # at least this long of kills, and as long as the load runs


SIZE = Size(20_000, 400, 45) if FULL else Size(1_500, 200, 8)


@pytest.fixture
def publish_report(tmp_path: Path) -> object:
    def publish(report: Report) -> Path:
        folder = Path(os.environ.get("CHAOS_REPORT_DIR", tmp_path))
        folder.mkdir(parents=True, exist_ok=True)
        _summaries.append(report.summary())
        return report.write(folder)

    return publish


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _summaries:
        terminalreporter.write_line(line)
