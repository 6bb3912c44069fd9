"""The worker fed by Redis Streams: enqueue -> relay -> stream -> consumer group -> row.

The real relay publishes; the worker reads as a consumer group and claims by ``job_id``. An
entry leaves the group's pending list only once its job's outcome is committed.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from outbox.states import JobStatus
from relay.redis_publisher import RedisPublisher
from relay.routing import Router
from tests.waiting import wait_until
from tests.worker.conftest import (
    FAST,
    QUICK_RETRIES,
    Runs,
    StartRelay,
    StartWorker,
    enqueue,
    job,
    wait_for_status,
    went_round,
)
from worker import HandlerRegistry, Job, Retry, Worker
from worker.redis_source import RedisSource

pytestmark = pytest.mark.redis
S = JobStatus
GROUP = "workers"


@pytest.fixture
def prefix() -> str:
    return f"w{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def stream(prefix: str) -> str:
    return f"{prefix}jobs"


@pytest.fixture
def relay(start_relay: StartRelay, redis_url: str, prefix: str) -> None:
    start_relay(RedisPublisher(redis_url, stream_prefix=prefix), Router("jobs"))


StartRedisWorker = Callable[..., Worker]


@pytest.fixture
def start_redis_worker(
    engine: Engine, start_worker: StartWorker, redis_url: str, prefix: str
) -> StartRedisWorker:
    def start(
        registry: HandlerRegistry, *, group: str = GROUP, min_idle: float = 30.0, **kwargs: object
    ) -> Worker:
        source = RedisSource(engine, redis_url, streams=[f"{prefix}jobs"], group=group,
                             consumer=f"c-{uuid.uuid4().hex[:6]}", min_idle_seconds=min_idle,
                             block_seconds=0.05)  # fmt: skip
        return start_worker(registry, kwargs.pop("config", FAST), source=source, **kwargs)

    return start


def pending(client: redis.Redis, stream: str, group: str = GROUP) -> int:
    return int(client.xpending(stream, group)["pending"])


def test_jobs_flow_from_enqueue_through_relay_and_stream_to_completed_exactly_once(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("email.send")(runs.record)
    job_ids = [enqueue(engine, "email.send", {"n": n}, key=f"k{n % 3}") for n in range(40)]
    start_redis_worker(registry)
    start_redis_worker(registry)  # two consumers of one group share the stream

    for job_id in job_ids:
        assert wait_for_status(engine, job_id, S.COMPLETED).attempts == 1
    assert Counter(runs.calls) == Counter((job_id, 1) for job_id in job_ids)
    assert wait_until(lambda: pending(redis_client, stream) == 0)
    assert redis_client.xlen(stream) == 40


def test_the_entry_is_acked_only_after_the_outcome_is_committed(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    started, release = threading.Event(), threading.Event()

    @registry.handler("slow")
    def slow(job: Job) -> None:
        started.set()
        assert release.wait(10)

    job_id = enqueue(engine, "slow")
    start_redis_worker(registry)
    assert started.wait(10)
    assert job(engine, job_id).status is S.PROCESSING
    receipt = job(engine, job_id).publish_receipt
    assert receipt is not None
    assert _pending_ids(redis_client, stream) == [receipt["entry_id"]]

    samples: list[tuple[int, S]] = []

    def acked() -> bool:
        count = pending(redis_client, stream)
        samples.append((count, job(engine, job_id).status))
        return count == 0

    assert not acked()  # still pending while the handler runs
    release.set()
    assert wait_until(acked)
    # Every look that found the entry acked found the job COMPLETED, never the other way round.
    assert all(status is S.COMPLETED for count, status in samples if count == 0)
    assert job(engine, job_id).status is S.COMPLETED


def test_a_duplicate_entry_runs_the_handler_once_and_is_acked_at_once(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    started, release = threading.Event(), threading.Event()

    @registry.handler("pay")
    def pay(job: Job) -> None:
        runs.record(job)
        started.set()
        assert release.wait(10)

    job_id = enqueue(engine, "pay")
    start_redis_worker(registry)
    assert started.wait(10)
    [(original_id, fields)] = redis_client.xrange(stream)
    copy_id = redis_client.xadd(stream, fields)  # the same message again, while the job runs

    # The copy finds nothing to claim and is acked at once; the original waits for the outcome.
    assert wait_until(lambda: _pending_ids(redis_client, stream) == [original_id])
    release.set()
    wait_for_status(engine, job_id, S.COMPLETED)
    late_copy_id = redis_client.xadd(stream, fields)  # and once more, after it completed
    assert wait_until(lambda: pending(redis_client, stream) == 0)
    assert runs.calls == [(job_id, 1)]
    assert len({original_id, copy_id, late_copy_id}) == 3


def _pending_ids(client: redis.Redis, stream: str) -> list[str]:
    return [p["message_id"] for p in client.xpending_range(stream, GROUP, "-", "+", 10)]


def read_by_a_consumer_that_died(
    engine: Engine, client: redis.Redis, stream: str
) -> tuple[str, str]:
    """Enqueue a "ship" job; a consumer reads its entry and dies before claiming, so the entry
    sits in that consumer's pending list. Returns the job_id and the entry id."""
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    job_id = enqueue(engine, "ship")
    wait_for_status(engine, job_id, S.PUBLISHED)
    [[_, [(entry_id, _)]]] = client.xreadgroup(GROUP, "dead", {stream: ">"}, count=10)
    return job_id, entry_id


def test_an_entry_read_by_a_consumer_that_died_is_taken_over_and_completes_once(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("ship")(runs.record)
    job_id, _ = read_by_a_consumer_that_died(engine, redis_client, stream)

    start_redis_worker(registry, min_idle=0.3)

    record = wait_for_status(engine, job_id, S.COMPLETED)
    assert (record.attempts, runs.calls) == (1, [(job_id, 1)])
    assert wait_until(lambda: pending(redis_client, stream) == 0)
    assert redis_client.xlen(stream) == 1  # taken over, not published again


def test_replies_are_parsed_by_hiredis_a_dependency_of_the_project() -> None:
    # redis-py's own parser cost a Redis-fed worker a quarter of its drain rate.
    assert redis.utils.HIREDIS_AVAILABLE, "hiredis missing: install the project's dependencies"


def test_an_entry_deleted_from_the_stream_while_pending_is_acked_and_runs_nothing(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    # Redis 6.2 hands such an entry over as (nil, nil) and leaves it pending; the reply parser
    # (hiredis, or redis-py's own) must give the source that shape for it to ack the entry.
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("ship")(runs.record)
    _, entry_id = read_by_a_consumer_that_died(engine, redis_client, stream)
    redis_client.xdel(stream, entry_id)  # trimmed before anyone ran its job
    assert pending(redis_client, stream) == 1

    worker = start_redis_worker(registry, min_idle=0.3)

    assert wait_until(lambda: pending(redis_client, stream) == 0)
    assert wait_until(went_round(worker))
    assert runs.calls == []


def test_a_failing_job_is_retried_through_promote_relay_and_stream_until_dead(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()

    @registry.handler("flaky", max_attempts=3)
    def flaky(job: Job) -> None:
        runs.record(job)
        raise ConnectionError("down")

    job_id = enqueue(engine, "flaky")
    start_redis_worker(registry, config=QUICK_RETRIES, scheduler=BackgroundScheduler())

    record = wait_for_status(engine, job_id, S.DEAD)
    assert (record.attempts, record.last_error) == (3, "ConnectionError: down")
    assert runs.calls == [(job_id, 1), (job_id, 2), (job_id, 3)]
    # One entry per attempt, each published after the promotion made the job PENDING again.
    assert [f["attempt"] for _, f in redis_client.xrange(stream)] == ["1", "2", "3"]
    assert wait_until(lambda: pending(redis_client, stream) == 0)


def test_a_snoozed_job_is_published_again_for_the_same_attempt_and_completes(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()

    @registry.handler("later")
    def later(job: Job) -> str:
        runs.record(job)
        if len(runs.calls) == 1:
            raise Retry(after=0.05)  # PENDING again, the attempt given back
        return "done"

    job_id = enqueue(engine, "later")
    start_redis_worker(registry)

    record = wait_for_status(engine, job_id, S.COMPLETED)
    assert (record.attempts, runs.calls) == (1, [(job_id, 1), (job_id, 1)])
    # The second publication of attempt 1 is an entry of its own, not the first one again.
    assert [f["attempt"] for _, f in redis_client.xrange(stream)] == ["1", "1"]
    assert wait_until(lambda: pending(redis_client, stream) == 0)


def test_entries_of_types_without_a_handler_are_left_to_the_group_that_has_one(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    emails, invoices = HandlerRegistry(), HandlerRegistry()
    runs = Runs()
    emails.handler("email.send")(runs.record)
    invoices.handler("invoice.create")(runs.record)
    invoice = enqueue(engine, "invoice.create")
    email = enqueue(engine, "email.send")
    wait_for_status(engine, email, S.PUBLISHED)  # both are on the stream, the invoice first
    start_redis_worker(emails, group="emails")

    wait_for_status(engine, email, S.COMPLETED)
    assert wait_until(lambda: pending(redis_client, stream, "emails") == 0)
    [group] = redis_client.xinfo_groups(stream)
    assert group["last-delivered-id"] == redis_client.xrange(stream)[-1][0]
    # The email workers' group read the invoice's entry and acked it without claiming the job.
    assert job(engine, invoice).status is S.PUBLISHED

    start_redis_worker(invoices, group="invoices")
    wait_for_status(engine, invoice, S.COMPLETED)
    assert sorted(runs.calls) == sorted([(email, 1), (invoice, 1)])


def test_a_type_at_its_concurrency_cap_waits_unclaimed_while_others_run(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker
) -> None:
    registry = HandlerRegistry()
    release = threading.Event()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    lock = threading.Lock()

    def work(job: Job) -> None:
        with lock:
            running[job.type] += 1
            peak[job.type] = max(peak[job.type], running[job.type])
        if job.type == "capped":
            release.wait(10)
        with lock:
            running[job.type] -= 1

    registry.handler("capped", concurrency=1)(work)
    registry.handler("free")(work)
    capped = [enqueue(engine, "capped") for _ in range(3)]
    free = [enqueue(engine, "free") for _ in range(3)]
    start_redis_worker(registry)

    for job_id in free:
        wait_for_status(engine, job_id, S.COMPLETED)
    statuses = Counter(job(engine, job_id).status for job_id in capped)
    assert statuses == Counter({S.PROCESSING: 1, S.PUBLISHED: 2})  # not claimed, not snoozed
    release.set()
    for job_id in capped:
        assert wait_for_status(engine, job_id, S.COMPLETED).attempts == 1
    assert peak["capped"] == 1


def test_a_consumer_group_deleted_under_a_running_worker_is_created_again(
    engine: Engine, relay: None, start_redis_worker: StartRedisWorker,
    redis_client: redis.Redis, stream: str,
) -> None:  # fmt: skip
    registry = HandlerRegistry()
    runs = Runs()
    registry.handler("ping")(runs.record)
    start_redis_worker(registry)
    first = enqueue(engine, "ping")
    wait_for_status(engine, first, S.COMPLETED)

    redis_client.xgroup_destroy(stream, GROUP)  # as after a Redis restart without persistence
    second = enqueue(engine, "ping")

    wait_for_status(engine, second, S.COMPLETED)
    assert runs.calls == [(first, 1), (second, 1)]  # the first, read again, found nothing to claim
