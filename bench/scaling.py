"""How cost grows: claim latency and worker throughput beside many finished rows, and with
more worker processes.

Finished rows: one ``INSERT ... SELECT generate_series`` of COMPLETED rows (the state the
partial indexes must keep out of the hot path), then a backlog of PENDING jobs; claim latency
is each ``queries.claim_batch`` round trip (batch 100, committed, then completed), p50/p99 over
the drain; worker throughput is ``build_worker`` draining a second backlog beside them, and the
raw claim+complete loop (B=100, one connection) a third: the drain's reference, on a table and
indexes of the same size.

Worker processes: N spawned processes, each ``build_worker`` on the table source with a no-op
handler; they start, report ready, and begin on one signal; the clock runs from that signal
until the database shows the whole backlog COMPLETED.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from multiprocessing.synchronize import Event

from bench import databases, drains, raw_limits, worker_bench
from bench.report import Row, Sample
from bench.servers import Servers, fresh_database
from outbox import queries
from outbox.cli.services import build_worker
from outbox.database import create_engine
from outbox.job_record import Lease
from outbox.settings import Settings
from outbox.states import JobStatus
from worker import HandlerRegistry, Job

CLAIM_BATCH = 100


def claim_name(finished: int) -> str:
    return f"claim latency, {finished:,} finished rows"


def drain_name(finished: int) -> str:
    return f"worker, table, {finished:,} finished rows"


def raw_name(finished: int) -> str:
    return f"raw claim+complete, B={CLAIM_BATCH}, 1 conn, {finished:,} finished rows"


def processes_name(n: int) -> str:
    return f"worker, table, {n} process{'es' if n > 1 else ''}"


def rows(finished_rows: tuple[int, ...], processes: tuple[int, ...], jobs: int,
         drain_raw: tuple[str, ...], concurrency: int) -> list[Row]:  # fmt: skip
    smallest = claim_name(finished_rows[0])
    out = [Row(claim_name(f), "ms", raw=(smallest,),
               notes=f"B={CLAIM_BATCH}, {jobs:,} pending; vs the {finished_rows[0]:,} row")
           for f in finished_rows]  # fmt: skip
    out += [Row(raw_name(f), "rows/s", raw=(raw_name(f),), notes=f"jobs: {jobs:,}")
            for f in finished_rows]  # fmt: skip
    out += [Row(drain_name(f), "jobs/s", raw=(raw_name(f),), peer_kind="drain",
                notes=f"jobs: {jobs:,}, C={concurrency}; vs raw beside as many")
            for f in finished_rows]  # fmt: skip
    out += [Row(processes_name(n), "jobs/s", raw=drain_raw, peer_kind="drain",
                notes=f"jobs: {jobs:,}, C={concurrency} each") for n in processes]  # fmt: skip
    return out


def claim_latencies(url: str, jobs: int) -> list[float]:
    """Seconds of each claim round trip while draining ``jobs`` PENDING jobs in batches."""
    engine = create_engine(url)
    latencies: list[float] = []
    try:
        with engine.connect() as conn:
            while True:
                started = time.perf_counter()
                with conn.begin():
                    claimed = queries.claim_batch(conn, worker_id="scale", limit=CLAIM_BATCH,
                                                  lease=timedelta(seconds=30),
                                                  default_max_attempts=5)  # fmt: skip
                latencies.append(time.perf_counter() - started)
                if not claimed:
                    break
                with conn.begin():
                    queries.mark_completed(conn, [queries.Completion(Lease(j.id, j.lease_token))
                                                  for j in claimed])  # fmt: skip
    finally:
        engine.dispose()
    return latencies[:-1] or latencies  # the empty claim at the end is not a claim


class FinishedRowsDatabases:
    """One database per finished-row count, filled on first use and kept for the later runs
    (10M rows take minutes to insert); each run adds only its own backlogs. Dropped on close."""

    def __init__(self, servers: Servers) -> None:
        self._servers = servers
        self._stack = contextlib.ExitStack()
        self._urls: dict[int, str] = {}

    def url(self, finished: int) -> str:
        if finished not in self._urls:
            url = self._stack.enter_context(fresh_database(self._servers))
            raw_limits.fill(url, finished, finished=True, prefix="done-")
            self._urls[finished] = url
        return self._urls[finished]

    def close(self) -> None:
        self._stack.close()


_TURNS: collections.defaultdict[int, Iterator[int]] = collections.defaultdict(itertools.count)
"""Per size of finished rows, how many times its group has run (it alternates its drains)."""


def finished_rows_group(url: str, finished: int, jobs: int, concurrency: int) -> dict[str, Sample]:
    """Claim latency, a worker drain, and the raw claim+complete loop (the drain's reference, at
    the same size of table and indexes), of ``jobs`` each beside the finished rows at ``url``."""
    run = uuid.uuid4().hex[:8]
    engine = create_engine(url)
    try:
        before = worker_bench.count_status(engine, JobStatus.COMPLETED)
        raw_limits.fill(url, jobs, prefix=f"claim-{run}-")
        databases.settle(url)
        seconds = claim_latencies(url, jobs)
        q = statistics.quantiles(seconds, n=100, method="inclusive") if len(seconds) > 1 else None
        p50, p99 = (q[49] * 1000, q[98] * 1000) if q else (seconds[0] * 1000,) * 2
        setup = drains.Setup(admin_url=url, jobs=jobs, concurrency=concurrency)
        settings = worker_bench.worker_settings(setup, url, "none")

        def worker_drain() -> drains.Drained:
            raw_limits.fill(url, jobs, prefix=f"drain-{run}-")
            databases.settle(url)
            return worker_bench.drain_outbox_worker(engine, settings, jobs, beside_finished=True)

        # Each drain leaves dead row versions the next one's table carries: take turns going
        # first, so neither the worker nor its reference always runs on the other's debris.
        if next(_TURNS[finished]) % 2 == 0:
            drained, raw_seconds = worker_drain(), raw_drain(url, jobs)
        else:
            raw_seconds = raw_drain(url, jobs)
            drained = worker_drain()
        # Every row, finished before or now, COMPLETED after exactly one attempt.
        worker_bench.verify_outbox(engine, before + 3 * jobs, None)
    finally:
        engine.dispose()
    if drained.handler_calls != jobs:
        raise drains.DrainFailed(f"{jobs} jobs, {drained.handler_calls} handler calls")
    return {
        claim_name(finished): Sample(p50, p50, p99),
        drain_name(finished): Sample(jobs / drained.seconds),
        raw_name(finished): Sample(jobs / raw_seconds),
    }


def raw_drain(url: str, jobs: int) -> float:
    """Seconds the raw claim+complete loop (B=100, one connection) takes to drain ``jobs``."""
    raw_limits.fill(url, jobs, prefix=f"raw-{uuid.uuid4().hex[:8]}-")
    databases.settle(url)
    done: list[int] = []
    failures: list[BaseException] = []
    started = time.perf_counter()
    raw_limits.claim_loop(url, CLAIM_BATCH, done, failures)
    seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    if sum(done) != jobs:
        raise drains.DrainFailed(f"raw claim+complete finished {sum(done)} of {jobs}")
    return seconds


def _process(url: str, concurrency: int, ready: Event, go: Event, stop: Event) -> None:
    registry = HandlerRegistry()

    @registry.handler(worker_bench.NOOP)
    def noop(job: Job) -> None:
        pass

    settings = Settings(database_url=url, broker="none", default_topic="bench-scale",
                        worker_concurrency=concurrency, worker_batch_size=concurrency)  # fmt: skip
    worker = build_worker(settings, registry)
    thread = threading.Thread(target=worker.run, daemon=True)
    ready.set()
    go.wait()
    thread.start()
    stop.wait()
    worker.stop()
    thread.join(60)
    worker.engine.dispose()


def processes_group(servers: Servers, count: int, jobs: int, concurrency: int) -> Sample:
    spawn = multiprocessing.get_context("spawn")  # the parent holds threads and pools
    with fresh_database(servers) as url:
        raw_limits.fill(url, jobs, prefix="proc-")
        databases.settle(url)
        go, stop = spawn.Event(), spawn.Event()
        readies = [spawn.Event() for _ in range(count)]
        children = [spawn.Process(target=_process, args=(url, concurrency, r, go, stop))
                    for r in readies]  # fmt: skip
        for child in children:
            child.start()
        engine = create_engine(url)
        try:
            for ready in readies:
                if not ready.wait(120):
                    raise drains.DrainFailed("a worker process did not start within 120 s")
            go.set()
            started = time.perf_counter()
            deadline = drains.deadline_for(jobs)
            # Counted on the live states' partial indexes: a count of COMPLETED every 10 ms
            # read every finished row, a growing load on the server inside the timed span.
            while worker_bench.count_unfinished(engine) > 0:
                if time.monotonic() > deadline:
                    raise drains.DrainFailed(f"{count} processes did not drain {jobs}")
                time.sleep(0.01)  # polling the database is the only shared signal
            seconds = time.perf_counter() - started
            worker_bench.verify_outbox(engine, jobs, None)
        finally:
            stop.set()
            go.set()
            for child in children:
                child.join(60)
            engine.dispose()
    return Sample(jobs / seconds)
