"""``bench/suite.py`` end to end on tiny sizes, on the test session's servers: every row of the
table gets a positive figure, its ratios, and a place in the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bench import groups, scaling, suite
from bench.report import show, to_json, write_json
from bench.servers import using_servers

TINY = groups.Sizes(
    runs=1, clients=2, seconds=0.3, claim_jobs=300, claim_jobs_b1=100, relay_jobs=300,
    relay_batch=100, latency_rate=200, latency_seconds=0.5, worker_jobs=300, slow_jobs=100,
    concurrency=20, finished_rows=(1_000, 5_000), scaling_jobs=300, processes=(1, 2),
)  # fmt: skip
# Differences of noisy timings.
MAY_BE_NEGATIVE = {groups.ENQUEUE_COST, groups.STATEMENT_COST, groups.JOB_ROW_COST}


def test_suite_reports_every_row_with_positive_figures_and_ratios(
    postgres_admin_url: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    servers = using_servers(postgres_admin_url, redis_url, kafka_bootstrap)

    table = suite.run_suite(servers, TINY)
    path = tmp_path / "latest.json"
    info = suite.meta(servers, TINY, quick=True)
    write_json(path, to_json(table, info))

    document = json.loads(path.read_text())
    by_name = {row["name"]: row for row in document["rows"]}
    assert list(by_name) == [r.name for r in suite.all_rows(TINY, with_scaling=True)]
    assert scaling.processes_name(2) in by_name
    for name, row in by_name.items():
        assert row["not_run"] is None, name
        assert row["runs"] == 1, name
        assert row["median"] is not None, name
        if name not in MAY_BE_NEGATIVE:
            assert row["median"] > 0, name
        if row["raw_reference"] and name not in MAY_BE_NEGATIVE:
            assert (row["ratio_to_raw"] or 0) > 0, name
        if row["unit"] == "ms" and name not in MAY_BE_NEGATIVE:
            assert 0 <= row["p50_ms"] <= row["p99_ms"], name
    peered = (groups.WORKER_TABLE, groups.WORKER_ASYNC, groups.ENQUEUE_MANY)
    peered += (scaling.drain_name(5_000),)
    for name in peered:
        assert (by_name[name]["ratio_to_best_peer"] or 0) > 0, name
    assert by_name[groups.INSERT_1]["ratio_to_raw"] == 1.0  # a raw row is its own reference
    assert document["machine"]["cores"] >= 1
    assert document["machine"]["postgresql"]

    console = Console(record=True, width=250)
    show(table, info, console)
    printed = console.export_text()
    assert "QUICK mode" in printed
    assert groups.RELAY_KAFKA in printed
