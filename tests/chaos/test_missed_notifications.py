"""Missed notifications: the listening sessions terminated every second, or notifications off.

NOTIFY is a hint; polling is the guarantee. Pass: nothing lost, and every job published within
the poll interval plus a margin for the machine (``published_at - created_at``, both stamped by
the database).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.chaos.checker import Report
from tests.chaos.conftest import FULL, WARM_UP, Stage
from tests.chaos.load import run_transactions
from tests.waiting import wait_until

POLL_SECONDS = 0.5
MARGIN_SECONDS = 1.0  # a busy 2-core machine: scheduling, a batch in flight
TRANSACTIONS = 3000 if FULL else 400
TERMINATE_LISTENERS = sa.text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
)


@pytest.mark.parametrize("notifications", ["terminated", "off"])
def test_missed_notifications_lose_nothing_and_delay_at_most_a_poll_interval(
    stage: Stage, publish_report: Callable[[Report], Path], notifications: str
) -> None:
    stage.set(OUTBOX_POLL_INTERVAL_SECONDS=str(POLL_SECONDS),
              OUTBOX_NOTIFY="false" if notifications == "off" else "true")  # fmt: skip
    stage.services.start("relay-1")
    stage.services.start("worker-1")
    stage.warm_up()
    load = threading.Thread(target=run_transactions,
                            args=(stage.engine, TRANSACTIONS, stage.ledger),
                            kwargs={"rate": 100.0})  # fmt: skip
    load.start()
    terminated = 0
    while load.is_alive():
        load.join(1.0)
        if notifications == "terminated":
            with stage.engine.connect() as conn:
                terminated += int(conn.execute(TERMINATE_LISTENERS).scalar_one())
    started = time.monotonic()
    drained = wait_until(lambda: stage.unfinished() == 0, 60, every=0.1)

    report = stage.report(f"notifications-{notifications}",
                          drain_seconds=time.monotonic() - started)  # fmt: skip
    publish_report(report)
    assert drained, report.summary()
    assert (report.lost, report.phantom) == (0, 0), report.summary()
    with stage.engine.connect() as conn:
        slowest = conn.execute(sa.text(
            "SELECT max(extract(epoch FROM published_at - created_at)) FROM outbox_jobs "
            "WHERE job_id <> :warm_up"
        ), {"warm_up": WARM_UP}).scalar_one()  # fmt: skip
    assert float(slowest) <= POLL_SECONDS + MARGIN_SECONDS
    if notifications == "terminated":
        assert terminated >= 2  # the sessions were there to terminate, and came back
    assert stage.services.stop_all() == {"relay-1": 0, "worker-1": 0}
