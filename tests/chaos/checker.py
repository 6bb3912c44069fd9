"""The checker: gathers what the table, the broker, the handlers and the transitions say, and
compares it with the ledger. One summary line, and a JSON report.

Transitions are recorded by a trigger the scenario installs in its own database (never part of
the schema): every status change of a job, as PostgreSQL committed it, with the worker that held
the job before. The broker's side is a Redis stream or a Kafka topic read back to its end; a
broker duplicate is a second message with the same ``(job_id, attempt)``, and a repeated run a
second handler run of the same ``(job_id, attempt)``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.engine import Engine

from tests.chaos.load import Ledger, Outcome

TRANSITIONS = """
CREATE TABLE chaos_transitions (
    job_id text NOT NULL, old_status text NOT NULL, new_status text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    locked_by text  -- the worker that held the job before the move, if one did
);
CREATE FUNCTION chaos_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO chaos_transitions (job_id, old_status, new_status, locked_by)
        VALUES (NEW.job_id, OLD.status, NEW.status, OLD.locked_by);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER chaos_transitions AFTER UPDATE ON outbox_jobs
    FOR EACH ROW EXECUTE FUNCTION chaos_record_transition();
"""


def record_transitions(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(TRANSITIONS))


@dataclass(frozen=True)
class Report:
    scenario: str
    committed: int
    rolled_back: int
    lost: int
    phantom: int
    broker_duplicates: int
    double_completions: int
    handler_reruns: int
    attempts_over_max: int
    order_violations: int
    drain_seconds: float
    kills: dict[str, int]
    repeated_runs: int = 0  # (job_id, attempt) pairs whose handler ran more than once
    freezes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # figures of one scenario only

    def summary(self) -> str:
        kills = " ".join(f"{k}={v}" for k, v in sorted(self.kills.items())) or "none"
        freezes = " ".join(f"{k}={v}" for k, v in sorted(self.freezes.items()))
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"chaos {self.scenario}: committed={self.committed} rolled_back={self.rolled_back} "
            f"lost={self.lost} phantom={self.phantom} broker_duplicates={self.broker_duplicates} "
            f"double_completions={self.double_completions} handler_reruns={self.handler_reruns} "
            f"repeated_runs={self.repeated_runs} attempts_over_max={self.attempts_over_max} "
            f"order_violations={self.order_violations} drain={self.drain_seconds:.1f}s "
            f"kills: {kills}" + (f" freezes: {freezes}" if freezes else "") + extra
        )

    def write(self, folder: Path) -> Path:
        path = folder / f"chaos-{self.scenario}.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


@dataclass(frozen=True)
class Entry:
    job_id: str
    attempt: str


def stream_entries(redis_url: str, stream: str) -> list[Entry]:
    client = redis.Redis.from_url(redis_url)
    try:
        found: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream)  # type: ignore[assignment]
        return [Entry(f[b"job_id"].decode(), f[b"attempt"].decode()) for _, f in found]
    finally:
        client.close()


def topic_entries(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[Entry]:
    """Every record of a Kafka topic, by its ``job_id`` and ``attempt`` headers, in partition
    order: read from offset 0 up to each partition's high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in metadata.partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        left = {p for p, end in ends.items() if end > 0}
        entries: list[Entry] = []
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                if message.error() is not None:
                    continue
                headers = dict(message.headers() or [])
                entries.append(Entry(_text(headers["job_id"]), _text(headers["attempt"])))
                if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                    left.discard(message.partition() or 0)
        assert not left, f"partitions {left} of {topic} not read to their end in {timeout} s"
        return entries
    finally:
        consumer.close()


def _text(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Run:
    job_id: str
    attempt: str


def handler_runs(runs_log: Path) -> list[Run]:
    """Every handler run the log holds (``run <job_id> <attempt> <pid>``)."""
    return [Run(*line.split()[1:3]) for line in runs_log.read_text().splitlines() if line]


def order_violations(first_seen: list[str], ledger: Ledger) -> int:
    """Per key, how many jobs reached the broker after a later job of the same key."""
    highest: dict[str, int] = defaultdict(lambda: -1)
    violations = 0
    for job_id in first_seen:
        key, seq = ledger.keys[job_id], ledger.seqs[job_id]
        if seq < highest[key]:
            violations += 1
        highest[key] = max(highest[key], seq)
    return violations


def check(
    scenario: str, engine: Engine, ledger: Ledger, entries: list[Entry], runs: list[Run],
    *, drain_seconds: float, kills: dict[str, int], freezes: dict[str, int] | None = None,
    extra: dict[str, int] | None = None,
) -> Report:  # fmt: skip
    committed = ledger.with_outcome(Outcome.COMMITTED)
    rolled_back = ledger.with_outcome(Outcome.ROLLED_BACK)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT job_id, status, attempts, coalesce(max_attempts, attempts) FROM outbox_jobs"
        )).all()  # fmt: skip
        completions = Counter(conn.execute(sa.text(
            "SELECT job_id FROM chaos_transitions WHERE new_status = 'COMPLETED'"
        )).scalars())  # fmt: skip
    status = {r[0]: r[1] for r in rows}
    run_ids = [r.job_id for r in runs]
    seen = set(status) | {e.job_id for e in entries} | set(run_ids)
    first_seen = list(dict.fromkeys(e.job_id for e in entries))
    pairs = Counter((e.job_id, e.attempt) for e in entries)
    return Report(
        scenario=scenario,
        committed=len(committed),
        rolled_back=len(rolled_back),
        lost=sum(1 for j in committed if status.get(j) != "COMPLETED"),
        phantom=len(rolled_back & seen),
        broker_duplicates=sum(n - 1 for n in pairs.values()),
        double_completions=sum(1 for n in completions.values() if n > 1),
        handler_reruns=len(run_ids) - len(set(run_ids)),
        attempts_over_max=sum(1 for r in rows if r[2] > r[3]),
        order_violations=order_violations([j for j in first_seen if j in ledger.keys], ledger),
        drain_seconds=drain_seconds,
        kills=kills,
        repeated_runs=sum(n - 1 for n in Counter(runs).values()),
        freezes=dict(freezes or {}),
        extra=dict(extra or {}),
    )
