"""Commit-to-handled latency of the outbox worker on the table source, NOTIFY on.

A writer commits one job per transaction at ``rate`` jobs/s (open loop: each transaction
starts on its schedule however the worker keeps up); the worker, as ``outbox worker`` builds
it, runs a handler that notes when it started. Latency is handler start minus the writer's
commit, both on this process's monotonic clock.
"""

from __future__ import annotations

import threading
import time

import gateway
from outbox.cli.services import build_worker
from outbox.database import create_engine
from outbox.settings import Settings
from worker import HandlerRegistry, Job

JOB_TYPE = "bench.latency"


def commit_to_handled(database_url: str, *, rate: float, seconds: float) -> list[float]:
    """Latencies (seconds) of ``rate * seconds`` jobs, from commit to their handler's start."""
    total = max(1, int(rate * seconds))
    committed: dict[str, float] = {}
    handled: dict[str, float] = {}
    all_handled = threading.Event()
    lock = threading.Lock()
    registry = HandlerRegistry()

    @registry.handler(JOB_TYPE)
    def note(job: Job) -> None:
        now = time.monotonic()
        with lock:
            handled.setdefault(job.job_id, now)
            if len(handled) == total:
                all_handled.set()

    settings = Settings(database_url=database_url, broker="none", notify=True,
                        default_topic="bench-latency")  # fmt: skip
    worker = build_worker(settings, registry)
    thread = threading.Thread(target=worker.run, name="latency-worker", daemon=True)
    thread.start()
    engine = create_engine(database_url)
    try:
        started = time.monotonic()
        for n in range(total):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the offered schedule, not a wait for the worker
            job_id = f"lat-{n}"
            with engine.begin() as conn:
                gateway.enqueue(conn, JOB_TYPE, {"n": n}, job_id=job_id, key=f"k{n % 64}")
            committed[job_id] = time.monotonic()
        if not all_handled.wait(60):
            raise RuntimeError(f"the worker handled {len(handled)} of {total} jobs within 60 s")
    finally:
        worker.stop()
        thread.join(60)
        worker.engine.dispose()
        engine.dispose()
    return [max(0.0, handled[j] - committed[j]) for j in committed]
