"""The worker's pipeline shape beside other shapes, each cut down to its statements and a pool.

    .venv/bin/python -m bench.pipeline_shapes [--jobs 50000] [--rounds 4] [--concurrency 100]

The table-source worker drains at about 0.4x of the raw 4-connection claim+complete loop (README,
"Benchmarks"). This asks how much of that the pipeline's shape decides, apart from the per-job
bookkeeping. Every shape drains the same backlog of no-op jobs with the worker's claim (its
columns, ``SKIP LOCKED``, batches of C) and its fenced completion, runs the handlers on a pool
of C threads, and holds at most the worker's bound of jobs claimed and not yet completed
(``IN_HAND_PER_SLOT`` x C: what a killed worker leaves to wait out its leases), and does
nothing else: no metrics, spans, rate limits or lease bookkeeping.

- **split**: the worker's shape: one claim loop, and one writer thread that completes what the
  handlers finished, in batches;
- **split, 2 claim loops**: the same, with two claim loops sharing the bound;
- **piggyback, N loops**: no writer; each round of a loop is one statement that completes the
  outcomes finished since the loop's last round and claims the next batch;
- and, for reference in the same run, the worker itself with all its bookkeeping
  (``build_worker`` on the table, the baseline of the ratios) and the suite's raw
  claim+complete loop from 4 connections (no handlers).

Rounds interleave the shapes (the order alternating) on one embedded PostgreSQL, each drain on a
fresh backlog, checked after (every job COMPLETED after one attempt). Prints the median jobs/s
of each and its median paired ratio to the worker itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/pipeline_shapes.py`: the repository root holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import databases, raw_limits, report, worker_bench
from bench.drains import Setup
from outbox.database import create_engine
from outbox.states import JobStatus
from worker.claim_pace import IN_HAND_PER_SLOT

CLAIM = """
UPDATE outbox_jobs SET status = 'PROCESSING', attempts = attempts + 1,
       max_attempts = coalesce(max_attempts, 5), locked_by = 'shape',
       locked_until = now() + interval '30 seconds', lease_token = gen_random_uuid(),
       updated_at = now(), started_at = now()
WHERE id = ANY(array(SELECT id FROM outbox_jobs WHERE status = 'PENDING' AND run_at <= now()
                     ORDER BY priority DESC, run_at, id LIMIT %(claim)s FOR UPDATE SKIP LOCKED))
  AND status = 'PENDING'
RETURNING id, lease_token, job_id, type, payload::text, key, topic, attempts, max_attempts,
          headers::text, locked_until, created_at, published_at
"""
COMPLETE = """
UPDATE outbox_jobs SET status = 'COMPLETED', result = NULL, finished_at = now(),
       updated_at = now(), locked_by = NULL, locked_until = NULL, lease_token = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS done(id, lease_token)
WHERE outbox_jobs.id = done.id AND outbox_jobs.lease_token = done.lease_token
  AND outbox_jobs.status = 'PROCESSING'
RETURNING outbox_jobs.id
"""
# One row at least, so the count of completions comes back when nothing was claimed.
COMPLETE_AND_CLAIM = f"""
WITH done AS ({COMPLETE}), claimed AS ({CLAIM})
SELECT (SELECT count(*) FROM done), claimed.* FROM (SELECT 1) AS one LEFT JOIN claimed ON true
"""

Row = tuple[Any, ...]
Outcome = tuple[int, Any]  # a finished job's id and lease token
Shape = Callable[[str, int], float]


class InHand:
    """Jobs claimed and not yet completed, at most ``bound``; thread-safe."""

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._count = 0
        self._changed = threading.Condition()

    def take(self, batch: int, *, wait: bool) -> int:
        """Reserve up to ``batch`` slots (waiting for one if ``wait``); how many were reserved."""
        with self._changed:
            while wait and self._count >= self._bound:
                self._changed.wait()
            granted = max(0, min(batch, self._bound - self._count))
            self._count += granted
            return granted

    def give_back(self, n: int) -> int:
        """Free ``n`` slots (completed, or reserved and not claimed); how many stay taken."""
        with self._changed:
            self._count -= n
            self._changed.notify_all()
            return self._count

    def wait_empty(self) -> None:
        with self._changed:
            while self._count:
                self._changed.wait()


def _noop(row: Row) -> None:
    pass


def split(url: str, concurrency: int, *, claim_loops: int = 1) -> float:
    """Claim loops dispatch to the pool; handlers queue outcomes; one writer completes them."""
    in_hand = InHand(IN_HAND_PER_SLOT * concurrency)
    outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()

    def handle(row: Row) -> None:
        _noop(row)
        outcomes.put((row[0], row[1]))

    def write() -> None:
        with raw_limits.connect(url) as conn:
            stop = False
            while not stop and (first := outcomes.get()) is not None:
                more = _ready(outcomes, 499)
                stop = None in more  # the end, drained with the last outcomes: write them first
                batch = [first, *(o for o in more if o is not None)]
                ids = [job_id for job_id, _ in batch]
                conn.execute(COMPLETE, {"ids": ids, "tokens": [token for _, token in batch]})
                in_hand.give_back(len(batch))

    def claim(pool: ThreadPoolExecutor) -> None:
        with raw_limits.connect(url) as conn:
            while granted := in_hand.take(concurrency, wait=True):
                rows = conn.execute(CLAIM, {"claim": granted}).fetchall()
                in_hand.give_back(granted - len(rows))
                if not rows:
                    return
                for row in rows:
                    pool.submit(handle, row)

    writer = threading.Thread(target=write)
    writer.start()
    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        _run_all([lambda: claim(pool)] * claim_loops)
        in_hand.wait_empty()
        seconds = time.perf_counter() - started
    outcomes.put(None)
    writer.join()
    return seconds


def piggyback(url: str, concurrency: int, *, loops: int = 2) -> float:
    """Each loop's round: one statement completes what finished and claims the next batch."""
    in_hand = InHand(IN_HAND_PER_SLOT * concurrency)
    outcomes: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
    backlog_empty = threading.Event()

    def handle(row: Row) -> None:
        _noop(row)
        outcomes.put((row[1], row[2]))

    def loop(pool: ThreadPoolExecutor) -> None:
        with raw_limits.connect(url) as conn:
            while True:
                granted = 0 if backlog_empty.is_set() else in_hand.take(concurrency, wait=False)
                finished = _ready(outcomes, 10 * concurrency)
                if not granted and not finished:
                    first = outcomes.get()  # nothing to claim into and nothing to complete
                    if first is None:
                        return
                    finished = [first, *_ready(outcomes, 10 * concurrency)]
                stop = None in finished
                done = [o for o in finished if o is not None]
                parameters = {"ids": [job_id for job_id, _ in done],
                              "tokens": [token for _, token in done], "claim": granted}  # fmt: skip
                rows = conn.execute(COMPLETE_AND_CLAIM, parameters).fetchall()
                claimed = [row for row in rows if row[1] is not None]
                if granted and not claimed:
                    backlog_empty.set()
                left = in_hand.give_back(len(done) + granted - len(claimed))
                for row in claimed:
                    pool.submit(handle, row)
                if backlog_empty.is_set() and left == 0:
                    for _ in range(loops):  # wake every loop blocked on outcomes, then end
                        outcomes.put(None)
                    return
                if stop:
                    return

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        _run_all([lambda: loop(pool)] * loops)
        return time.perf_counter() - started


def _ready(outcomes: queue.SimpleQueue[Outcome | None], most: int) -> list[Outcome | None]:
    """What is in the queue now, up to ``most``, without waiting."""
    taken: list[Outcome | None] = []
    while len(taken) < most:
        try:
            taken.append(outcomes.get_nowait())
        except queue.Empty:
            break
    return taken


def _run_all(targets: Sequence[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # reported below, once every thread has ended
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def raw_loop(url: str, concurrency: int, *, connections: int = 4) -> float:
    """The raw claim+complete loop of the suite (ids only, no handlers): the reference."""
    done: list[int] = []
    failures: list[BaseException] = []
    started = time.perf_counter()
    _run_all([lambda: raw_limits.claim_loop(url, concurrency, done, failures)] * connections)
    seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    return seconds


def worker(url: str, concurrency: int) -> float:
    """The worker itself, as ``outbox worker`` wires it on the table, with a no-op handler."""
    engine = create_engine(url)
    try:
        jobs = worker_bench.count_status(engine, JobStatus.PENDING)
        setup = Setup(admin_url=url, jobs=jobs, concurrency=concurrency)
        settings = worker_bench.worker_settings(setup, url, "none")
        return worker_bench.drain_outbox_worker(engine, settings, jobs).seconds
    finally:
        engine.dispose()


SHAPES: dict[str, Shape] = {
    "the worker itself (build_worker, table)": worker,
    "split (the worker's shape, cut down)": split,
    "split, 2 claim loops": lambda url, c: split(url, c, claim_loops=2),
    "piggyback, 1 loop": lambda url, c: piggyback(url, c, loops=1),
    "piggyback, 2 loops": lambda url, c: piggyback(url, c, loops=2),
    "raw claim+complete, 4 conn (no handlers)": raw_loop,
}
BASELINE = next(iter(SHAPES))


@dataclass
class Drains:
    """Jobs/s of each shape, one figure per round."""

    rates: dict[str, list[float]]

    def paired_ratio(self, name: str) -> float:
        return report.paired_ratio(self.rates[name], self.rates[BASELINE])


def drain_once(url: str, shape: Shape, jobs: int, concurrency: int) -> float:
    """Jobs/s of ``shape`` draining a fresh backlog of ``jobs``; checks every job after."""
    raw_limits.reset(url)
    raw_limits.fill(url, jobs)
    databases.settle(url)
    seconds = shape(url, concurrency)
    engine = create_engine(url)
    try:
        worker_bench.verify_outbox(engine, jobs, None)
    finally:
        engine.dispose()
    return jobs / seconds


def measure(url: str, jobs: int, rounds: int, concurrency: int) -> Drains:
    drains = Drains({name: [] for name in SHAPES})
    for i in range(rounds):
        order = list(SHAPES.items()) if i % 2 == 0 else list(SHAPES.items())[::-1]
        for name, shape in order:
            drains.rates[name].append(drain_once(url, shape, jobs, concurrency))
    return drains


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50_000, help="backlog per drain")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved drains per shape")
    parser.add_argument("--concurrency", type=int, default=100, help="pool threads and batch (C)")
    args = parser.parse_args()
    with databases.embedded_outbox_database() as url:
        drains = measure(url, args.jobs, args.rounds, args.concurrency)
    table = Table(title=f"pipeline shapes, {args.jobs:,} no-op jobs, C={args.concurrency}, "
                  f"{args.rounds} interleaved rounds")  # fmt: skip
    for column in ("shape", "median jobs/s", "paired ratio to the worker", "rounds"):
        table.add_column(column, justify="left" if column == "shape" else "right")
    for name, rates in drains.rates.items():
        each = ", ".join(f"{rate:,.0f}" for rate in rates)
        ratio = f"{drains.paired_ratio(name):.2f}x"
        table.add_row(name, f"{statistics.median(rates):,.0f}", ratio, each)
    Console().print(table)


if __name__ == "__main__":
    main()
