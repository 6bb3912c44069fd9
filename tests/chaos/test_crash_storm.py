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
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.checker import Report
from tests.chaos.conftest import SIZE, Stage
from tests.chaos.load import run_transactions
from tests.waiting import wait_until

SERVICES = ("relay-1", "relay-2", "worker-1", "worker-2")
DRAIN_LIMIT = 60.0


@pytest.mark.timeout(360)  # the full size (make chaos) runs for a few minutes
def test_a_crash_storm_loses_nothing_invents_nothing_and_completes_each_job_once(
    stage: Stage, publish_report: Callable[[Report], Path]
) -> None:
    stage.set(OUTBOX_MAX_ATTEMPTS="10")  # kills take attempts along; none may run out here
    load = threading.Thread(target=run_transactions,
                            args=(stage.engine, SIZE.transactions, stage.ledger),
                            kwargs={"rate": SIZE.rate})  # fmt: skip
    rng = random.Random(11)
    for name in SERVICES:
        stage.services.start(name)
    load.start()
    storm_ends = time.monotonic() + SIZE.storm_seconds
    while load.is_alive() or time.monotonic() < storm_ends:
        time.sleep(rng.uniform(1, 3))  # the fault schedule: the next kill in 1-3 s
        assert not stage.services.exited(), f"died on its own: {stage.services.exited()}"
        stage.services.kill_and_restart(rng.choice(SERVICES))
    last_kill = time.monotonic()
    drained = wait_until(lambda: stage.unfinished() == 0, DRAIN_LIMIT, every=0.2)
    drain_seconds = time.monotonic() - last_kill
    stage.services.stop_all()  # one may have just been started again: its exit code says nothing

    report = stage.report("crash-storm", drain_seconds=drain_seconds)
    publish_report(report)
    assert drained, report.summary()
    assert report.committed + report.rolled_back == SIZE.transactions
    assert (report.lost, report.phantom, report.broker_duplicates, report.double_completions,
            report.repeated_runs, report.attempts_over_max,
            report.order_violations) == (0, 0, 0, 0, 0, 0, 0), report.summary()  # fmt: skip
    assert sum(report.kills.values()) >= 3, report.summary()
