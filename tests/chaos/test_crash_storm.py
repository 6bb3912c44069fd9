"""Crash storm: relays and workers SIGKILLed every 1-3 s and started again, under load.

Short size in the default suite (1,500 business transactions, 8 s of kills); ``make chaos``
runs 20,000. Pass: nothing lost, nothing phantom, no duplicate at the broker (Redis
deduplicates each (job_id, attempt) in its publish script), no double completion, no attempt
over the maximum, per-key order kept, all drained within 60 s of the last kill.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.chaos.checker import (
    Report,
    check,
    handler_runs,
    record_transitions,
    stream_entries,
)
from tests.chaos.conftest import SIZE
from tests.chaos.load import Ledger, Outcome, create_business_table, run_transactions
from tests.chaos.services import Services, service_env
from tests.waiting import wait_until

SERVICES = ("relay-1", "relay-2", "worker-1", "worker-2")
DRAIN_LIMIT = 60.0


def unfinished(engine: Engine, job_ids: set[str]) -> int:
    query = sa.text("SELECT count(*) FROM outbox_jobs WHERE job_id = ANY(:ids) "
                    "AND status <> 'COMPLETED'")  # fmt: skip
    with engine.connect() as conn:
        return int(conn.execute(query, {"ids": list(job_ids)}).scalar_one())


@pytest.mark.timeout(360)  # the full size (make chaos) runs for a few minutes
def test_a_crash_storm_loses_nothing_invents_nothing_and_completes_each_job_once(
    engine: Engine, database_url: str, redis_url: str, tmp_path: Path,
    publish_report: Callable[[Report], Path],
) -> None:  # fmt: skip
    create_business_table(engine)
    record_transitions(engine)
    (tmp_path / "runs.log").touch()
    prefix = f"chaos-{uuid.uuid4().hex[:8]}:"
    services = Services(tmp_path, service_env(database_url, redis_url, prefix, tmp_path)
                        | {"OUTBOX_MAX_ATTEMPTS": "10"})  # fmt: skip
    ledger = Ledger()
    load = threading.Thread(target=run_transactions, args=(engine, SIZE.transactions, ledger),
                            kwargs={"rate": SIZE.rate})  # fmt: skip
    rng = random.Random(11)
    try:
        for name in SERVICES:
            services.start(name)
        load.start()
        storm_ends = time.monotonic() + SIZE.storm_seconds
        while load.is_alive() or time.monotonic() < storm_ends:
            time.sleep(rng.uniform(1, 3))  # the fault schedule: the next kill in 1-3 s
            assert not services.exited(), f"a service died on its own: {services.exited()}"
            services.kill_and_restart(rng.choice(SERVICES))
        last_kill = time.monotonic()
        committed = ledger.with_outcome(Outcome.COMMITTED)
        drained = wait_until(lambda: unfinished(engine, committed) == 0, DRAIN_LIMIT, every=0.2)
        drain_seconds = time.monotonic() - last_kill
        services.stop_all()  # one may have just been started again: its exit code says nothing
    finally:
        services.kill_all()

    report = check("crash-storm", engine, ledger,
                   stream_entries(redis_url, f"{prefix}orders"),
                   handler_runs(tmp_path / "runs.log"),
                   drain_seconds=drain_seconds, kills=services.kills)  # fmt: skip
    publish_report(report)
    assert drained, report.summary()
    assert report.committed + report.rolled_back == SIZE.transactions
    assert (report.lost, report.phantom, report.broker_duplicates, report.double_completions,
            report.attempts_over_max, report.order_violations) == (0, 0, 0, 0, 0, 0), \
        report.summary()  # fmt: skip
    assert sum(report.kills.values()) >= 3, report.summary()
