"""``outbox worker`` as operators run it: killed mid-job, stopped with SIGTERM, misconfigured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from outbox.schema import jobs
from outbox.states import JobStatus
from relay.kafka_publisher import KafkaPublisher
from relay.redis_publisher import RedisPublisher
from relay.routing import Router
from tests.kafka_topics import fresh_topic
from tests.waiting import wait_until
from tests.worker.conftest import StartRelay, enqueue, job, wait_for_status

OUTBOX = str(Path(sys.executable).parent / "outbox")
ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.worker.process_handlers"
S = JobStatus


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "runs.log").touch()
    return tmp_path


@pytest.fixture
def worker_env(database_url: str, run_dir: Path) -> dict[str, str]:
    return os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_BROKER": "none",
        "OUTBOX_LEASE_SECONDS": "1",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.05",
        "OUTBOX_RESCUE_INTERVAL_SECONDS": "0.2",
        "OUTBOX_WORKER_SHUTDOWN_GRACE_SECONDS": "3",
        "OUTBOX_PROBE_HOST": "127.0.0.1",
        "OUTBOX_PROBE_PORT": "0",  # several workers at once: each on a free port of its own
        "WORKER_TEST_DIR": str(run_dir),
    }


class Spawned(subprocess.Popen[bytes]):
    """An ``outbox worker`` process whose stderr goes to a file (a pipe nobody reads can fill)."""

    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def spawn(worker_env: dict[str, str], run_dir: Path) -> Iterator[Callable[..., Spawned]]:
    started: list[Spawned] = []

    def start(**env: str) -> Spawned:
        log_path = run_dir / f"worker-{len(started)}.log"
        with log_path.open("wb") as log:
            process = Spawned([OUTBOX, "worker", "--handlers", HANDLERS], cwd=ROOT,
                              env=worker_env | env, stderr=log)  # fmt: skip
        process.log_path = log_path
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def runs(run_dir: Path) -> list[list[str]]:
    return [line.split() for line in (run_dir / "runs.log").read_text().splitlines()]


def test_a_job_whose_worker_is_killed_mid_run_completes_exactly_once_elsewhere(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned]
) -> None:
    job_id = enqueue(engine, "test.gated", {"gate": "g1"})
    first = spawn()
    assert wait_until(lambda: len(runs(run_dir)) == 1, timeout=20)
    first.send_signal(signal.SIGKILL)  # no goodbye: the lease is all that is left
    assert first.wait(10) == -signal.SIGKILL
    assert job(engine, job_id).status is S.PROCESSING

    (run_dir / "release-g1").touch()
    second = spawn()
    record = wait_for_status(engine, job_id, S.COMPLETED)

    assert record.attempts == 2  # the killed attempt counts
    assert record.result == {"done_by": second.pid}
    assert runs(run_dir) == [
        ["start", job_id, "1", str(first.pid)],
        ["start", job_id, "2", str(second.pid)],
        ["done", job_id, "2", str(second.pid)],
    ]
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0


@pytest.fixture(params=["redis", "kafka"])
def broker_env(
    request: pytest.FixtureRequest, start_relay: StartRelay, redis_url: str, kafka_bootstrap: str
) -> dict[str, str]:
    """A relay publishing to a broker of the test's own, and the env of workers reading it."""
    group = {"OUTBOX_WORKER_GROUP": f"g-{uuid.uuid4().hex[:8]}"}
    if request.param == "redis":
        prefix = f"p{uuid.uuid4().hex[:8]}:"
        start_relay(RedisPublisher(redis_url, stream_prefix=prefix), Router("jobs"))
        return group | {"OUTBOX_BROKER": "redis", "OUTBOX_REDIS_URL": redis_url,
                        "OUTBOX_REDIS_STREAM_PREFIX": prefix, "OUTBOX_DEFAULT_TOPIC": "jobs",
                        "OUTBOX_WORKER_REDIS_MIN_IDLE_SECONDS": "0.5"}  # fmt: skip
    topic = fresh_topic(kafka_bootstrap)
    start_relay(KafkaPublisher(kafka_bootstrap, timeout_seconds=10), Router(topic))
    config = json.dumps({"session.timeout.ms": 2000, "heartbeat.interval.ms": 300})  # fast joins
    return group | {"OUTBOX_BROKER": "kafka", "OUTBOX_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                    "OUTBOX_DEFAULT_TOPIC": topic, "OUTBOX_KAFKA_CONFIG": config}  # fmt: skip


def test_a_broker_fed_worker_killed_mid_job_loses_nothing_and_completes_once(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned], broker_env: dict[str, str]
) -> None:
    job_id = enqueue(engine, "test.gated", {"gate": "g1"})
    first = spawn(**broker_env)
    assert wait_until(lambda: len(runs(run_dir)) == 1, timeout=20)
    first.send_signal(signal.SIGKILL)  # its delivery unacked, its lease left to expire
    assert first.wait(10) == -signal.SIGKILL
    assert job(engine, job_id).status is S.PROCESSING

    (run_dir / "release-g1").touch()
    second = spawn(**broker_env)
    # Rescued (the attempt counts), published again by the relay, claimed by the second; the
    # first delivery, taken over or read again, finds nothing left to claim.
    record = wait_for_status(engine, job_id, S.COMPLETED, timeout=30)

    assert (record.attempts, record.result) == (2, {"done_by": second.pid})
    assert runs(run_dir) == [
        ["start", job_id, "1", str(first.pid)],
        ["start", job_id, "2", str(second.pid)],
        ["done", job_id, "2", str(second.pid)],
    ]
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0


@pytest.mark.parametrize(
    ("point", "lines_before_the_crash"),
    [("worker.after_claim", 0), ("worker.in_handler", 1), ("worker.after_handler", 2)],
)
def test_a_worker_killed_at_any_step_loses_no_job_and_completes_none_twice(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned], point: str,
    lines_before_the_crash: int,
) -> None:  # fmt: skip
    job_id = enqueue(engine, "test.quick")
    first = spawn(OUTBOX_FAILPOINTS=f"{point}=kill")
    assert first.wait(20) == -signal.SIGKILL
    assert job(engine, job_id).status is S.PROCESSING
    assert len(runs(run_dir)) == lines_before_the_crash

    second = spawn()
    record = wait_for_status(engine, job_id, S.COMPLETED)

    assert (record.attempts, record.result) == (2, {"done_by": second.pid})
    crashed = [["start", job_id, "1", str(first.pid)], ["done", job_id, "1", str(first.pid)]]
    rerun = [["start", job_id, "2", str(second.pid)], ["done", job_id, "2", str(second.pid)]]
    assert runs(run_dir) == [*crashed[:lines_before_the_crash], *rerun]


def sigterm_with_one_job_finishing_in_the_grace_period(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned], job_type: str
) -> tuple[Spawned, str, str]:
    """Two ``job_type`` jobs running, SIGTERM, then one released inside the 1.5 s grace period:
    the worker exits 0 and gives the other back. Returns the process and both job ids."""
    finishing = enqueue(engine, job_type, {"gate": "soon"})
    stuck = enqueue(engine, job_type, {"gate": "never"})
    process = spawn(OUTBOX_WORKER_SHUTDOWN_GRACE_SECONDS="1.5")
    assert wait_until(lambda: len(runs(run_dir)) == 2, timeout=20)

    process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "worker stopping" in process.log())
    (run_dir / "release-soon").touch()  # finishes inside the grace period
    assert process.wait(15) == 0

    given_back = job(engine, stuck)
    assert (given_back.status, given_back.attempts, given_back.locked_by) == (S.PENDING, 0, None)
    return process, finishing, stuck


def test_sigterm_lets_running_jobs_finish_in_the_grace_period_then_gives_the_rest_back(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned]
) -> None:
    _, finishing, _ = sigterm_with_one_job_finishing_in_the_grace_period(
        engine, run_dir, spawn, "test.gated"
    )

    assert job(engine, finishing).status is S.COMPLETED
    with engine.connect() as conn:
        processing = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.status == S.PROCESSING)
        ).scalar_one()
    assert processing == 0


def test_sigterm_lets_async_jobs_finish_in_the_grace_period_then_cancels_and_gives_back_the_rest(
    engine: Engine, run_dir: Path, spawn: Callable[..., Spawned]
) -> None:
    process, finishing, stuck = sigterm_with_one_job_finishing_in_the_grace_period(
        engine, run_dir, spawn, "test.async_gated"
    )

    assert job(engine, finishing).result == {"done_by": process.pid}
    pid = str(process.pid)
    assert sorted(runs(run_dir)) == sorted([
        ["start", finishing, "1", pid], ["start", stuck, "1", pid],
        ["done", finishing, "1", pid], ["cancelled", stuck, "1", pid],
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--handlers", "no_such_module_xyz"], {},
         "cannot import handlers module 'no_such_module_xyz': ModuleNotFoundError"),
        (["--handlers", HANDLERS], {"OUTBOX_BROKER": "redis", "OUTBOX_REDIS_URL": "redis://127.0.0.1:1/0"},
         "cannot reach Redis"),
        (["--handlers", HANDLERS], {"OUTBOX_RATE_LIMITS_BY_TYPE": '{"test.gated": "lots"}'},
         "OUTBOX_RATE_LIMITS_BY_TYPE: rate limit 'lots' is not like"),
        (["--handlers", HANDLERS], {"OUTBOX_WORKER_MIN_CONCURRENCY": "5",
                                    "OUTBOX_WORKER_MAX_CONCURRENCY": "4"},
         "OUTBOX_WORKER_MAX_CONCURRENCY: Value error, 4 is below OUTBOX_WORKER_MIN_CONCURRENCY"),
    ],
    ids=["missing-module", "broker-unreachable", "bad-rate-limit", "bad-concurrency-bounds"],
)  # fmt: skip
def test_a_worker_that_cannot_start_says_why_in_one_line_and_exits_2(
    worker_env: dict[str, str], args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run([OUTBOX, "worker", *args], cwd=ROOT, env=worker_env | env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def probe_port(process: Spawned) -> int | None:
    """The port ``outbox worker`` logged it serves its probes on (JSON logs), once it has."""
    for line in process.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line being written, or not JSON
        if entry.get("message") == "probe server listening":
            return int(entry["port"])
    return None


def scraped(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_outbox_worker_serves_probes_and_metrics_of_the_jobs_it_ran(
    engine: Engine, spawn: Callable[..., Spawned]
) -> None:
    job_id = enqueue(engine, "test.quick")
    process = spawn(OUTBOX_LOG_FORMAT="json", OUTBOX_WORKER_MIN_CONCURRENCY="2",
                    OUTBOX_WORKER_MAX_CONCURRENCY="6")  # fmt: skip
    assert wait_until(lambda: probe_port(process) is not None, timeout=20), process.log()
    base = f"http://127.0.0.1:{probe_port(process)}"
    wait_for_status(engine, job_id, S.COMPLETED)

    completed = {"type": "test.quick", "outcome": "completed"}
    assert wait_until(lambda: scraped(base, "outbox_worker_jobs_total", **completed) == 1)
    assert scraped(base, "outbox_worker_concurrency") == 2  # an autoscaled worker starts small
    assert scraped(base, "outbox_worker_in_flight") == 0
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").json() == {"status": "ok"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
