"""``bench/gateway_bench.py`` on a tiny load: the real ``outbox gateway`` process, every row."""

from __future__ import annotations

import re
from collections import Counter

import sqlalchemy as sa
from rich.console import Console

from bench import closed_loop, gateway_bench
from outbox.database import create_engine
from outbox.schema import jobs

REQUESTS, BATCH = 6, 5


def test_gateway_bench_stores_each_acknowledged_job_once_and_reports_positive_figures(
    database_url: str,
) -> None:
    load = closed_loop.Load(clients=2, requests=REQUESTS, batch_size=BATCH)

    results = gateway_bench.run_bench(database_url, load, runs=1)

    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = Counter(conn.scalars(sa.select(jobs.c.job_id)))
    engine.dispose()
    samples = {row.name: results.samples[row.name] for row in results.rows}
    acknowledged = Counter(j for runs in samples.values() for s in runs for j in s.job_ids)
    # Two single-job rows and two batch rows (in-process and HTTP); /healthz writes nothing.
    assert acknowledged.total() == 2 * REQUESTS + 2 * REQUESTS * BATCH
    assert stored == acknowledged  # nothing lost, nothing extra (the warm-up run was truncated)
    assert set(stored.values()) == {1}
    for name, [sample] in samples.items():
        assert sample.requests == REQUESTS, name
        assert sample.requests_per_second > 0, name
        assert 0 < sample.p50_ms <= sample.p99_ms, name
        if name != gateway_bench.HEALTHZ:
            assert sample.jobs_per_second > 0, name
            assert len(sample.job_ids) == sample.jobs, name

    console = Console(record=True, width=200)
    gateway_bench.show(results, load, console)
    printed = console.export_text()
    assert all(name in printed for name in samples)
    assert len(re.findall(r"\d+\.\d\dx", printed)) == 2  # each HTTP job row vs its baseline
