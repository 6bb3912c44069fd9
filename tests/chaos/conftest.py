"""Sizes of the fault-injection scenarios, and where their reports go.

The default test command runs the short size; ``make chaos`` sets ``CHAOS_SIZE=full``. Each
scenario's summary line is printed at the end of the run, and its JSON report is written to
``$CHAOS_REPORT_DIR`` (default: the test's temporary folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from relay.kafka_publisher import create_topic
from tests.chaos.checker import (
    Report,
    check,
    handler_runs,
    record_transitions,
    stream_entries,
    topic_entries,
)
from tests.chaos.load import Ledger, Outcome, create_business_table
from tests.chaos.services import Services, service_env
from tests.waiting import wait_until

WARM_UP = "warm-up"

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


@dataclass
class Stage:
    """One scenario's database, broker stream, services, ledger and evidence."""

    engine: Engine
    redis_url: str
    workdir: Path
    prefix: str
    services: Services
    ledger: Ledger
    kafka: tuple[str, str] | None = None  # (bootstrap, topic) once the services use Kafka

    def use_kafka(self, bootstrap: str) -> str:
        """Services started from now on go through a fresh Kafka topic (4 partitions)."""
        topic = f"chaos-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=4)
        # tansu completes a group join in about half the session timeout: keep it short.
        group = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}
        self.set(OUTBOX_BROKER="kafka", OUTBOX_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                 OUTBOX_DEFAULT_TOPIC=topic, OUTBOX_KAFKA_CONFIG=json.dumps(group),
                 OUTBOX_WORKER_GROUP=f"chaos-{uuid.uuid4().hex[:8]}")  # fmt: skip
        self.kafka = (bootstrap, topic)
        return topic

    def set(self, **settings: str) -> None:
        """OUTBOX_* settings for the services started from now on."""
        self.services.env |= settings

    def warm_up(self) -> None:
        """Wait until the services started run a job end to end (job_id ``warm-up``)."""
        with self.engine.begin() as conn:
            gateway.enqueue(conn, "chaos.order", {}, job_id=WARM_UP)
        query = sa.text("SELECT status FROM outbox_jobs WHERE job_id = :j")

        def completed() -> bool:
            with self.engine.connect() as conn:
                return bool(conn.execute(query, {"j": WARM_UP}).scalar_one() == "COMPLETED")

        assert wait_until(completed, timeout=30, every=0.05), "the services did not come up"

    def unfinished(self) -> int:
        """Committed jobs not yet COMPLETED."""
        committed = list(self.ledger.with_outcome(Outcome.COMMITTED))
        query = sa.text("SELECT count(*) FROM outbox_jobs WHERE job_id = ANY(:ids) "
                        "AND status = 'COMPLETED'")  # fmt: skip
        with self.engine.connect() as conn:
            done = int(conn.execute(query, {"ids": committed}).scalar_one())
        return len(committed) - done

    def report(
        self, scenario: str, *, drain_seconds: float, extra: dict[str, int] | None = None
    ) -> Report:
        if self.kafka is None:
            entries = stream_entries(self.redis_url, f"{self.prefix}orders")
        else:
            entries = topic_entries(*self.kafka)
        runs = handler_runs(self.workdir / "runs.log")
        return check(scenario, self.engine, self.ledger, entries, runs,
                     drain_seconds=drain_seconds, kills=self.services.kills,
                     freezes=self.services.freezes, extra=extra)  # fmt: skip


@contextlib.contextmanager
def open_stage(engine: Engine, database_url: str, redis_url: str, workdir: Path) -> Iterator[Stage]:
    """A stage on a migrated database; every service it started is killed on the way out."""
    create_business_table(engine)
    record_transitions(engine)
    (workdir / "runs.log").touch()
    prefix = f"chaos-{uuid.uuid4().hex[:8]}:"
    services = Services(workdir, service_env(database_url, redis_url, prefix, workdir))
    try:
        yield Stage(engine, redis_url, workdir, prefix, services, Ledger())
    finally:
        services.kill_all()


@pytest.fixture
def stage(engine: Engine, database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stage]:
    with open_stage(engine, database_url, redis_url, tmp_path) as opened:
        yield opened
