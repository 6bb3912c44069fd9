"""A transaction held open while later jobs of the same key commit (3 s short, 30 s full).

Its job has the lowest id of its key: the relay must neither skip it (a late commit below a
cursor) nor let the later jobs of its key overtake it. Pass: nothing lost, 0 order violations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

import gateway
from tests.chaos.checker import Report
from tests.chaos.conftest import FULL, Stage
from tests.chaos.load import Outcome, run_transactions
from tests.waiting import wait_until

HOLD_SECONDS = 30.0 if FULL else 3.0
RATE = 100.0


def test_a_transaction_held_open_is_published_before_the_later_jobs_of_its_key(
    stage: Stage, publish_report: Callable[[Report], Path]
) -> None:
    stage.services.start("relay-1")
    stage.services.start("worker-1")
    held_id, key = "order-held", "customer-0"  # the key of every 16th job the load writes
    with stage.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(sa.text("INSERT INTO chaos_orders (job_id, key, seq) VALUES (:j, :k, -1)"),
                     {"j": held_id, "k": key})  # fmt: skip
        gateway.enqueue(conn, "chaos.order", {"seq": -1}, job_id=held_id, key=key)
        run_transactions(stage.engine, int(HOLD_SECONDS * RATE), stage.ledger, rate=RATE)
        transaction.commit()
    stage.ledger.outcomes[held_id], stage.ledger.keys[held_id] = Outcome.COMMITTED, key
    stage.ledger.seqs[held_id] = -1
    committed_at = time.monotonic()
    drained = wait_until(lambda: stage.unfinished() == 0, 60, every=0.1)

    report = stage.report("held-transaction", drain_seconds=time.monotonic() - committed_at)
    publish_report(report)
    assert drained, report.summary()
    assert (report.lost, report.phantom, report.order_violations) == (0, 0, 0), report.summary()
    assert stage.services.stop_all() == {"relay-1": 0, "worker-1": 0}
