"""Dynamic concurrency on a real database: a worker grows under a backlog, shrinks when idle."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from outbox.cli import services
from outbox.settings import SettingsError, load_settings
from outbox.states import JobStatus
from tests.waiting import wait_until
from tests.worker.conftest import FAST, StartWorker, enqueue, wait_for_status
from worker import HandlerRegistry, Job, ScalePolicy, Worker, WorkerMetrics
from worker.executor import Executor

README = Path(__file__).resolve().parents[2] / "README.md"
SCALING = replace(
    FAST,
    concurrency=1,
    autoscale=ScalePolicy(minimum=1, maximum=4, grow_after=0, shrink_after=0.3, cooldown=0),
    backlog_interval=0.05,
)
"""Starts at one slot; decides every 50 ms, grows at the first sign of pressure."""


class Gate:
    """A handler that holds its slot until released, and counts how many run at once."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.released.wait(10), "the test never released the gate"
        finally:
            with self._lock:
                self.running -= 1


def gauge(metrics: WorkerMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_a_worker_grows_to_its_maximum_under_a_backlog_and_shrinks_back_when_idle(
    engine: Engine, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = HandlerRegistry()
    registry.handler("scale.gated")(gate)
    job_ids = [enqueue(engine, "scale.gated", {"i": i}) for i in range(12)]
    metrics = WorkerMetrics()
    worker = start_worker(registry, SCALING, metrics=metrics)

    assert wait_until(lambda: gate.running == 4), f"{gate.running} running, {worker.concurrency}"
    assert worker.concurrency == 4
    assert gauge(metrics, "outbox_worker_concurrency") == 4
    assert gauge(metrics, "outbox_worker_in_flight") == 4
    assert wait_until(lambda: gauge(metrics, "outbox_worker_backlog_per_capacity") == 8 / 4)

    gate.released.set()
    for job_id in job_ids:
        wait_for_status(engine, job_id, JobStatus.COMPLETED)
    assert wait_until(lambda: gauge(metrics, "outbox_worker_concurrency") == 1)
    assert worker.concurrency == 1
    assert gate.most == 4  # never more handlers at once than the maximum
    assert gauge(metrics, "outbox_worker_backlog_per_capacity") == 0


def test_a_fixed_worker_keeps_its_size_and_reports_the_due_backlog_of_its_types(
    engine: Engine,
) -> None:
    registry = HandlerRegistry()
    registry.handler("fixed.a")(lambda job: None)
    registry.handler("fixed.b")(lambda job: None)
    for job_type in ["fixed.a"] * 6 + ["fixed.b"] * 4:
        enqueue(engine, job_type)
    enqueue(engine, "fixed.a", run_at=datetime.now(UTC) + timedelta(hours=1))  # not due
    enqueue(engine, "someone.else")  # no handler here
    metrics = WorkerMetrics()
    worker = Worker(engine, registry, replace(FAST, concurrency=4), metrics=metrics)

    assert [worker.sample_backlog() for _ in range(3)] == [4, 4, 4]
    assert gauge(metrics, "outbox_worker_backlog_per_capacity") == 10 / 4
    assert gauge(metrics, "outbox_worker_concurrency") == 4


def handler_threads(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(f"{prefix}-"))


def test_the_executor_starts_threads_at_once_and_ends_the_surplus_after_their_task() -> None:
    executor = Executor(2, name="resize-test")
    executor.start()
    release = threading.Event()
    started: list[int] = []

    def hold() -> None:
        started.append(1)
        release.wait(10)

    try:
        assert handler_threads("resize-test") == 2
        executor.resize(5)
        assert (executor.size, handler_threads("resize-test")) == (5, 5)
        for _ in range(5):
            executor.submit(hold)
        assert wait_until(lambda: len(started) == 5)
        executor.resize(2)
        assert (executor.size, handler_threads("resize-test")) == (2, 5)  # none interrupted
        release.set()
        assert wait_until(lambda: handler_threads("resize-test") == 2)
        ran = [threading.Event(), threading.Event()]
        for event in ran:
            executor.submit(event.set)
        assert all(event.wait(10) for event in ran)
    finally:
        release.set()
        executor.stop()
    assert wait_until(lambda: handler_threads("resize-test") == 0)


def test_concurrency_is_fixed_at_worker_concurrency_unless_bounds_are_set() -> None:
    assert load_settings().worker_concurrency_bounds == (8, 8)
    assert load_settings(worker_concurrency=3).worker_concurrency_bounds == (3, 3)
    assert load_settings(worker_max_concurrency=12).worker_concurrency_bounds == (8, 12)
    bounds = load_settings(worker_min_concurrency=1, worker_max_concurrency=4)
    assert bounds.worker_concurrency_bounds == (1, 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"worker_min_concurrency": 5, "worker_max_concurrency": 4},
         "OUTBOX_WORKER_MAX_CONCURRENCY: Value error, 4 is below OUTBOX_WORKER_MIN_CONCURRENCY"),
        ({"worker_min_concurrency": 16},
         "8 is below OUTBOX_WORKER_MIN_CONCURRENCY (16); unset, it is OUTBOX_WORKER_CONCURRENCY"),
        ({"worker_min_concurrency": 0}, "OUTBOX_WORKER_MIN_CONCURRENCY: Input should be greater"),
    ],
)  # fmt: skip
def test_concurrency_bounds_out_of_order_are_refused_naming_the_setting(
    overrides: dict[str, int], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("env", "size", "policy"),
    [
        ({}, 8, None),
        ({"worker_min_concurrency": 4, "worker_max_concurrency": 4}, 4, None),
        ({"worker_min_concurrency": 1, "worker_max_concurrency": 4}, 1, (1, 4)),
    ],
)
def test_outbox_worker_builds_a_fixed_or_autoscaled_worker_from_the_settings(
    database_url: str, env: dict[str, int], size: int, policy: tuple[int, int] | None
) -> None:
    registry = HandlerRegistry()
    registry.handler("built")(lambda job: None)
    worker = services.build_worker(load_settings(database_url=database_url, **env), registry)
    try:
        scale = worker.config.autoscale
        assert worker.concurrency == size
        assert ((scale.minimum, scale.maximum) if scale else None) == policy
    finally:
        worker.engine.dispose()


@pytest.mark.parametrize(
    ("variable", "default"),
    [("OUTBOX_WORKER_MIN_CONCURRENCY", "`OUTBOX_WORKER_CONCURRENCY`"),
     ("OUTBOX_WORKER_MAX_CONCURRENCY", "`OUTBOX_WORKER_CONCURRENCY`")],
)  # fmt: skip
def test_the_concurrency_bounds_are_in_the_readme_settings_table(
    variable: str, default: str
) -> None:
    rows = [r for r in README.read_text().splitlines() if r.startswith(f"| `{variable}` |")]
    assert len(rows) == 1, f"{variable} missing from the README settings table"
    assert rows[0].split(" | ")[1] == default
