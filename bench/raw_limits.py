"""What PostgreSQL itself allows on the project's table and indexes: the baselines of the ratios.

Plain SQL through psycopg with prepared statements, no project code in the loop, on a clone of
the migrated template:

- inserts: one row per transaction, and 1,000 rows per transaction (one ``INSERT ... SELECT FROM
  unnest``), from the same closed-loop client threads as the enqueue rows
  (``closed_loop.drive``), each thread its own connection;
- the claim+complete loop: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT B)
  RETURNING id``, then ``UPDATE ... WHERE id = ANY(...)``, each its own transaction (a worker
  commits its claim before it runs handlers), from one or several connections (threads; psycopg
  releases the GIL while it waits on the server), draining a backlog filled by one
  ``INSERT ... SELECT generate_series``;
- a business transaction (one row in a business table) alone, with one ``gateway.enqueue``, with
  a second business row, and with one raw insert into the outbox table, taking turns in short
  blocks: the differences are what one enqueue adds to a caller's transaction, what any one more
  statement adds (the round trip), and what the job row itself adds (the floor of an enqueue).

Every row is checked: each acknowledged insert stored once, each job COMPLETED after one attempt.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import sqlalchemy as sa

import gateway
from bench import closed_loop, databases, drains, worker_bench
from bench.report import Sample
from outbox.database import create_engine, libpq_conninfo

INSERT_ONE = ("INSERT INTO outbox_jobs (job_id, type, payload, key) "
              "VALUES (%s, 'bench.noop', %s::jsonb, %s)")  # fmt: skip
INSERT_MANY = ("INSERT INTO outbox_jobs (job_id, type, payload, key) "
               "SELECT j, 'bench.noop', p::jsonb, k "
               "FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(j, p, k)")  # fmt: skip
CLAIM = """
UPDATE outbox_jobs SET status = 'PROCESSING', attempts = attempts + 1, locked_by = 'raw',
       locked_until = now() + interval '30 seconds', lease_token = gen_random_uuid(),
       started_at = now(), updated_at = now()
WHERE id IN (SELECT id FROM outbox_jobs WHERE status = 'PENDING' AND run_at <= now()
             ORDER BY priority DESC, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""
COMPLETE = """
UPDATE outbox_jobs SET status = 'COMPLETED', finished_at = now(), updated_at = now(),
       locked_by = NULL, locked_until = NULL, lease_token = NULL
WHERE id = ANY(%s) AND status = 'PROCESSING'
"""
FILL = """
INSERT INTO outbox_jobs (job_id, type, payload, key, status, attempts, finished_at)
SELECT %s || g, 'bench.noop', '{}'::jsonb, 'k' || (g %% 64), %s, %s,
       CASE WHEN %s THEN now() - interval '1 day' END
FROM generate_series(%s::bigint, %s::bigint) AS g
"""
BUSINESS_TABLE = "CREATE TABLE IF NOT EXISTS bench_business (id bigserial PRIMARY KEY, note text)"


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Autocommit, and every statement prepared from its first use."""
    return psycopg.connect(libpq_conninfo(url), autocommit=True, prepare_threshold=0)


def reset(url: str) -> None:
    with connect(url) as conn:
        conn.execute("TRUNCATE outbox_jobs")


def fill(url: str, jobs: int, *, finished: bool = False, prefix: str = "fill-") -> None:
    """``jobs`` no-op rows by ``generate_series``: PENDING, or COMPLETED a day ago (one attempt)."""
    status, attempts = ("COMPLETED", 1) if finished else ("PENDING", 0)
    with connect(url) as conn:
        for start in range(1, jobs + 1, 1_000_000):  # bounded transactions
            end = min(jobs, start + 999_999)
            conn.execute(FILL, (prefix, status, attempts, finished, start, end), prepare=False)


def insert_client(url: str, prefix: str, size: int) -> closed_loop.Client:
    """One client thread's connection; each call commits one row, or one batch of ``size``."""
    payloads, keys = ['{"i": 1}'] * size, [f"k{i % 64}" for i in range(size)]

    @contextlib.contextmanager
    def connected() -> Iterator[closed_loop.Call]:
        with connect(url) as conn:

            def call(n: int) -> list[str]:
                ids = [f"{prefix}-{n}-{i}" for i in range(size)]
                if size == 1:
                    conn.execute(INSERT_ONE, (ids[0], '{"i": 1}', f"k{n % 64}"))
                else:
                    conn.execute(INSERT_MANY, (ids, payloads, keys))
                return ids

            yield call

    return connected


def measure_inserts(url: str, load: closed_loop.Load, size: int, prefix: str) -> Sample:
    """Rows/s of raw inserts, ``size`` rows per transaction; then each stored row is checked."""
    sample = closed_loop.drive(load, insert_client(url, prefix, size), jobs_per=size)
    engine = create_engine(url)
    try:
        closed_loop.check_stored(engine, prefix, sample)
    finally:
        engine.dispose()
    return Sample(sample.jobs_per_second)


def claim_loop(url: str, batch: int, done: list[int], failures: list[BaseException]) -> None:
    """Claim ``batch`` and complete them, each its own transaction, until none is left."""
    try:
        with connect(url) as conn:
            while ids := [row[0] for row in conn.execute(CLAIM, (batch,)).fetchall()]:
                done.append(conn.execute(COMPLETE, (ids,)).rowcount)
    except BaseException as exc:  # reported by the caller, which joins every thread first
        failures.append(exc)


def measure_claims(url: str, jobs: int, batch: int, connections: int) -> Sample:
    """Rows/s of the claim+complete loop draining ``jobs`` from ``connections`` threads."""
    reset(url)
    fill(url, jobs)
    databases.settle(url)
    done: list[int] = []
    failures: list[BaseException] = []
    threads = [threading.Thread(target=claim_loop, args=(url, batch, done, failures))
               for _ in range(connections)]  # fmt: skip
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    if sum(done) != jobs:
        raise drains.DrainFailed(f"raw claim+complete finished {sum(done)} of {jobs}")
    engine = create_engine(url)
    try:
        worker_bench.verify_outbox(engine, jobs, None)
    finally:
        engine.dispose()
    return Sample(jobs / seconds)


ADDITIONS = ("nothing", "enqueue", "row", "outbox row")
"""What a business transaction (one business row) carries besides: nothing, one
``gateway.enqueue``, a second business row (the least any one more statement adds), or one raw
insert into the outbox table (straight to the driver: the least a job row costs)."""


def added_to_business_transactions(
    url: str, seconds: float, *, block: int = 25
) -> dict[str, float]:
    """Milliseconds that each of :data:`ADDITIONS` adds to a business transaction.

    The kinds of :data:`ADDITIONS` take turns in blocks of ``block`` transactions for
    ``seconds`` in all; each figure is the median over the turns of its block's time per
    transaction minus that of the block with nothing added, in the same turn. Measured one kind
    after the other instead, 5 s each, a machine slowing down midway once made the floor
    negative. All through SQLAlchemy, as an application writes them.
    """
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(BUSINESS_TABLE))
            conn.execute(sa.text("TRUNCATE bench_business, outbox_jobs"))
        prefix = uuid.uuid4().hex[:8]
        insert = sa.text("INSERT INTO bench_business (note) VALUES (:note)")
        enqueued = 0
        added: dict[str, list[float]] = {kind: [] for kind in ADDITIONS[1:]}
        deadline = time.perf_counter() + seconds
        turns = 0
        while time.perf_counter() < deadline:
            per_transaction = {}
            for kind in ADDITIONS:
                started = time.perf_counter()
                for _ in range(block):
                    with engine.begin() as conn:
                        conn.execute(insert, {"note": "order"})
                        if kind == "enqueue":
                            job_id = f"{prefix}-{enqueued}"
                            gateway.enqueue(conn, "bench.noop", {"i": enqueued}, job_id=job_id)
                            enqueued += 1
                        elif kind == "row":
                            conn.execute(insert, {"note": "order line"})
                        elif kind == "outbox row":
                            job_id = f"{prefix}-{enqueued}"
                            conn.exec_driver_sql(INSERT_ONE, (job_id, '{"i": 0}', job_id))
                            enqueued += 1
                per_transaction[kind] = (time.perf_counter() - started) * 1000 / block
            for kind, costs in added.items():
                costs.append(per_transaction[kind] - per_transaction["nothing"])
            turns += 1
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM outbox_jobs")).scalar_one()
            rows = conn.execute(sa.text("SELECT count(*) FROM bench_business")).scalar_one()
        if (stored, rows) != (enqueued, turns * block * (len(ADDITIONS) + 1)):
            raise drains.DrainFailed(
                f"{turns} turns of {block} business transactions of each kind: "
                f"{stored} jobs, {rows} rows"
            )
        return {kind: statistics.median(costs) for kind, costs in added.items()}
    finally:
        engine.dispose()


def insert_name(size: int) -> str:
    return "raw insert, 1 row/txn" if size == 1 else f"raw insert, {size:,} rows/txn"


def claim_name(batch: int, connections: int) -> str:
    return f"raw claim+complete, B={batch:,}, {connections} conn"
