"""Freeze storm: relays and workers frozen (SIGSTOP) for 2.5-4 s, longer than the 1 s worker
lease, then continued (SIGCONT), mixed with SIGKILLs, under load. Faults every 1-3 s, in turn:
freeze a worker, kill a relay, freeze a relay, kill a worker (Redis broker).

A frozen worker keeps its connections and believes it holds its jobs; meanwhile their leases
expire, they are rescued and run by the other worker. When it wakes, its late outcomes must be
refused. A frozen relay keeps its shards (advisory locks on its open session): their keys wait.

Short size in the default suite, full with ``CHAOS_SIZE=full``. Each run takes 50 ms (16
threads a worker), and a worker is frozen once it holds jobs. Pass: nothing lost, nothing
phantom, no duplicate at the broker, no double completion, no handler run twice for one attempt,
no attempt over the maximum, per-key order kept, all drained within 60 s of the last fault; and
leases expire in a frozen worker's hands: every freeze of a worker holding jobs saw one of them
taken back (rescued) before it was continued.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.chaos.checker import Report
from tests.chaos.conftest import SIZE, Stage
from tests.chaos.load import run_transactions
from tests.waiting import wait_until

REPLICAS = {"relay": ("relay-1", "relay-2"), "worker": ("worker-1", "worker-2")}
FAULTS = (("freeze", "worker"), ("kill", "relay"), ("freeze", "relay"), ("kill", "worker"))
LEASE_SECONDS = 1.0
FREEZE_SECONDS = (2.5, 4.0)  # well past the lease plus a rescue interval
DRAIN_LIMIT = 60.0
HELD = sa.text("SELECT count(*) FROM outbox_jobs WHERE status = 'PROCESSING' "
               "AND locked_by LIKE :worker")  # fmt: skip
TAKEN_WHILE_FROZEN = sa.text(
    "SELECT count(*) FROM chaos_transitions WHERE old_status = 'PROCESSING' "
    "AND new_status IN ('PENDING', 'DEAD') AND locked_by LIKE :worker AND at BETWEEN :a AND :b"
)


def held_by(stage: Stage, pid: int) -> int:
    """Jobs the worker process ``pid`` holds (its worker id is ``host:pid:random``)."""
    with stage.engine.connect() as conn:
        return int(conn.execute(HELD, {"worker": f"%:{pid}:%"}).scalar_one())


def holds_jobs(stage: Stage, pid: int) -> Callable[[], bool]:
    return lambda: held_by(stage, pid) > 0


def database_now(stage: Stage) -> datetime:
    with stage.engine.connect() as conn:
        now: datetime = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        return now


@pytest.mark.timeout(420)  # the full size runs for a few minutes
def test_a_freeze_storm_past_the_lease_loses_nothing_and_completes_each_job_once(
    stage: Stage, publish_report: Callable[[Report], Path]
) -> None:
    # 50 ms runs on 16 threads: one worker alone keeps up with the full size's 400/s.
    stage.set(OUTBOX_LEASE_SECONDS=str(LEASE_SECONDS), CHAOS_HANDLER_SECONDS="0.05",
              OUTBOX_WORKER_CONCURRENCY="16")  # fmt: skip
    services = stage.services
    for names in REPLICAS.values():
        for name in names:
            services.start(name)
    stage.warm_up()
    load = threading.Thread(target=run_transactions,
                            args=(stage.engine, SIZE.transactions, stage.ledger),
                            kwargs={"rate": SIZE.rate})  # fmt: skip
    rng = random.Random(17)
    windows: list[tuple[int, int, datetime, datetime]] = []  # frozen workers: pid, held, from, to
    frozen_since: dict[str, tuple[int, int, datetime]] = {}
    thaws: list[tuple[float, str]] = []  # (when, name), a heap

    def thaw_due(now: float) -> None:
        while thaws and thaws[0][0] <= now:
            _, name = heapq.heappop(thaws)
            if name not in services.frozen:
                continue  # killed while frozen: a new process runs under that name
            services.thaw(name)
            if name in frozen_since:
                pid, held, since = frozen_since.pop(name)
                windows.append((pid, held, since, database_now(stage)))

    load.start()
    storm_ends = time.monotonic() + SIZE.storm_seconds
    next_fault, fault = time.monotonic() + rng.uniform(1, 3), 0
    while load.is_alive() or time.monotonic() < storm_ends or thaws:
        wake = min([next_fault, *(t for t, _ in thaws[:1])])
        time.sleep(max(0.0, wake - time.monotonic()))  # the fault schedule, not a wait for work
        thaw_due(time.monotonic())
        if time.monotonic() < next_fault:
            continue
        if not load.is_alive() and time.monotonic() >= storm_ends:
            next_fault = float("inf")  # the storm is over: only thaws are left
            continue
        assert not services.exited(), f"died on its own: {services.exited()}"
        action, kind = FAULTS[fault % len(FAULTS)]
        candidates = [n for n in REPLICAS[kind] if n not in services.frozen]
        if action == "freeze" and candidates:
            name = rng.choice(candidates)
            pid = services.running[name].pid
            if kind == "worker":  # once it holds jobs (a busy worker nearly always does)
                wait_until(holds_jobs(stage, pid), timeout=5)
            since = database_now(stage)
            services.freeze(name)
            if kind == "worker":
                frozen_since[name] = (pid, held_by(stage, pid), since)
            heapq.heappush(thaws, (time.monotonic() + rng.uniform(*FREEZE_SECONDS), name))
        else:  # a kill (of a frozen process too: SIGKILL needs no SIGCONT)
            name = rng.choice(REPLICAS[kind])
            frozen_since.pop(name, None)
            services.kill_and_restart(name)
        fault += 1
        next_fault = time.monotonic() + rng.uniform(1, 3)
    last_fault = time.monotonic()
    assert not services.frozen
    drained = wait_until(lambda: stage.unfinished() == 0, DRAIN_LIMIT, every=0.2)
    drain_seconds = time.monotonic() - last_fault
    exited = services.exited()
    services.stop_all()

    with stage.engine.connect() as conn:
        taken = [
            int(conn.execute(TAKEN_WHILE_FROZEN, {"worker": f"%:{pid}:%", "a": a, "b": b})
                .scalar_one())
            for pid, _, a, b in windows
        ]  # fmt: skip
    held = [h for _, h, _, _ in windows]
    lease_lost = sum(log.read_text().count("lease lost") for log in stage.workdir.glob("worker-*"))
    report = stage.report("freeze-storm", drain_seconds=drain_seconds,
                          extra={"held_by_frozen_workers": sum(held),
                                 "taken_back_while_frozen": sum(taken),
                                 "lease_lost_warnings": lease_lost})  # fmt: skip
    publish_report(report)
    assert not exited, f"died on its own after the storm: {exited}"
    assert drained, report.summary()
    assert report.committed + report.rolled_back == SIZE.transactions
    assert (report.lost, report.phantom, report.broker_duplicates, report.double_completions,
            report.repeated_runs, report.attempts_over_max, report.order_violations) \
        == (0, 0, 0, 0, 0, 0, 0), report.summary()  # fmt: skip
    assert report.freezes.get("worker", 0) >= 1, report.summary()
    assert report.freezes.get("relay", 0) >= 1, report.summary()
    assert report.kills.get("relay", 0) >= 1, report.summary()
    assert report.kills.get("worker", 0) >= 1, report.summary()
    # The scenario did what it is for: leases expired in a frozen worker's hands.
    assert sum(held) >= 1, f"no worker was frozen holding a job: {report.summary()}"
    missed = [(h, t) for h, t in zip(held, taken, strict=True) if h > 0 and t == 0]
    assert not missed, f"(held, taken back) of freezes with none taken back: {missed}"
