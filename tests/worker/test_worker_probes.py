"""The worker's probe port, as ``outbox worker`` serves it: /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from outbox.cli import services
from outbox.database import create_engine
from outbox.errors import OutboxError
from outbox.probe_server import ProbeServer
from outbox.settings import Settings, load_settings
from tests.waiting import wait_until
from tests.worker.conftest import FAST, StartWorker, enqueue
from worker import HandlerRegistry, Job, Worker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def probe_settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, probe_host="127.0.0.1", probe_port=0)


def scrape(base: str) -> Samples:
    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def registry() -> HandlerRegistry:
    handlers = HandlerRegistry()

    @handlers.handler("p.ok")
    def ok(job: Job) -> None:
        pass

    return handlers


@pytest.fixture
def probes() -> Iterator[list[ProbeServer]]:
    started: list[ProbeServer] = []
    yield started
    for server in started:
        server.stop()


def serve(settings: Settings, worker: Worker, probes: list[ProbeServer]) -> str:
    server = services.start_worker_probes(settings, worker)
    probes.append(server)
    return f"http://127.0.0.1:{server.port}"


def test_metrics_and_probes_follow_the_running_worker(
    engine: Engine, database_url: str, start_worker: StartWorker, probes: list[ProbeServer]
) -> None:
    for _ in range(3):
        enqueue(engine, "p.ok")
    worker = start_worker(registry(), FAST)
    base = serve(probe_settings(database_url), worker, probes)

    completed = ("outbox_worker_jobs_total", (("outcome", "completed"), ("type", "p.ok")))
    assert wait_until(lambda: scrape(base).get(completed) == 3)
    found = scrape(base)
    assert found[("outbox_worker_concurrency", ())] == FAST.concurrency
    assert found[("outbox_worker_job_duration_seconds_count", (("type", "p.ok"),))] == 3
    assert found[("outbox_worker_publish_to_finish_seconds_count", ())] == 3
    assert ("outbox_worker_backlog_per_capacity", ()) in found
    assert found[("outbox_worker_last_loop_timestamp_seconds", ())] > 0
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").json() == {"status": "ok"}


def test_healthz_fails_once_the_loop_has_stalled(
    engine: Engine, database_url: str, probes: list[ProbeServer]
) -> None:
    worker = Worker(engine, registry(), FAST)  # never run: its loop never goes round
    server = services.start_probes(
        probe_settings(database_url), worker.metrics.registry,
        health=lambda: worker.health(stall_after=0.0), engine=engine,
    )  # fmt: skip
    probes.append(server)

    answer = httpx.get(f"http://127.0.0.1:{server.port}/healthz")

    assert answer.status_code == 503
    assert "worker loop stalled" in answer.json()["reason"]
    assert worker.health() is None  # the default bound: a minute and more


def test_readyz_fails_on_a_database_without_the_schema(
    empty_database_url: str, probes: list[ProbeServer]
) -> None:
    engine = create_engine(empty_database_url)
    try:
        worker = Worker(engine, registry(), FAST)
        base = serve(probe_settings(empty_database_url), worker, probes)
        ready = httpx.get(f"{base}/readyz")
        healthy = httpx.get(f"{base}/healthz")
    finally:
        engine.dispose()
    assert ready.status_code == 503
    assert "outbox migrate" in ready.json()["reason"]
    assert healthy.status_code == 200  # alive, just not ready


def test_a_probe_port_in_use_is_one_clear_error(
    database_url: str, engine: Engine, probes: list[ProbeServer]
) -> None:
    worker = Worker(engine, registry(), FAST)
    taken = services.start_worker_probes(probe_settings(database_url), worker)
    probes.append(taken)
    settings = load_settings(database_url=database_url, probe_host="127.0.0.1",
                             probe_port=taken.port)  # fmt: skip
    with pytest.raises(OutboxError, match="OUTBOX_PROBE_PORT"):
        services.start_worker_probes(settings, worker)
