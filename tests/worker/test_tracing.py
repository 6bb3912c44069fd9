"""One trace from the request that enqueued a job to the handler that ran it.

The caller's W3C trace context goes into the job's headers at enqueue, the relay carries it in
the broker message, and the worker's span for the handler is its child. OpenTelemetry's SDK
records into an in-memory exporter here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, StatusCode
from sqlalchemy.engine import Engine

import gateway
from gateway.app_context import GatewayConfig
from gateway.auth import TokenTable, hash_token
from gateway.http_app import create_app
from outbox.logging_setup import JobContextFilter, JsonFormatter
from outbox.states import JobStatus
from relay.redis_publisher import RedisPublisher
from relay.routing import Router
from tests.worker.conftest import FAST, StartRelay, StartWorker, job, wait_for_status
from worker import HandlerRegistry, Job
from worker.redis_source import RedisSource

pytestmark = pytest.mark.redis
TOKEN = "trace-writer-0123456789"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; later tests record nothing
    yield exporter
    provider.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def handler_span(spans: InMemorySpanExporter, job_type: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == f"process {job_type}"]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def ancestors(span: ReadableSpan, spans: InMemorySpanExporter) -> list[int]:
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    chain = []
    parent = span.parent
    while parent is not None:
        chain.append(parent.span_id)
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return chain


def test_one_trace_runs_from_the_enqueuing_request_through_redis_to_the_handler(
    engine: Engine,
    spans: InMemorySpanExporter,
    start_relay: StartRelay,
    start_worker: StartWorker,
    redis_url: str,
) -> None:
    prefix = "trace:"
    start_relay(RedisPublisher(redis_url, stream_prefix=prefix), Router("jobs"))
    current: list[SpanContext] = []
    registry = HandlerRegistry()

    @registry.handler("reservation.expired")
    def release(job: Job) -> None:
        current.append(trace.get_current_span().get_span_context())

    source = RedisSource(engine, redis_url, streams=[f"{prefix}jobs"], group="tracing",
                         consumer="c1", block_seconds=0.05)  # fmt: skip
    start_worker(registry, FAST, source=source)
    tokens = TokenTable.from_hex({"writer": (hash_token(TOKEN), ["jobs:write"])})
    client = TestClient(create_app(engine, GatewayConfig(tokens=tokens)))

    with trace.get_tracer("test.client").start_as_current_span("client submits") as request:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    response = client.post(
        "/v1/jobs",
        json={"type": "reservation.expired", "payload": {"seats": 2}},
        headers={**carrier, "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    wait_for_status(engine, job_id, JobStatus.COMPLETED)

    span = handler_span(spans, "reservation.expired")
    assert span.context.trace_id == request.get_span_context().trace_id
    # FastAPI's own server spans sit between the client's span and the job; the chain holds.
    assert request.get_span_context().span_id in ancestors(span, spans)
    (entry,) = redis.Redis.from_url(redis_url).xrange(f"{prefix}jobs")
    carried = json.loads(entry[1][b"headers"])["traceparent"]
    assert span.parent is not None
    assert carried.split("-")[2] == f"{span.parent.span_id:016x}"  # via the broker message
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == job_id
    assert current == [span.context]  # the handler ran inside the worker's span


def test_enqueue_captures_the_current_span_and_nothing_without_one(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    with engine.begin() as conn:
        untraced = gateway.enqueue(conn, "t", {})
        with trace.get_tracer("test").start_as_current_span("business") as business:
            traced = gateway.enqueue(conn, "t", {})
            given = gateway.enqueue(conn, "t", {}, headers={"traceparent": "00-" + "1" * 32
                                                            + "-" + "2" * 16 + "-01"})  # fmt: skip
    assert job(engine, untraced).headers == {}
    trace_id = f"{business.get_span_context().trace_id:032x}"
    assert job(engine, traced).headers["traceparent"].split("-")[1] == trace_id
    assert job(engine, given).headers["traceparent"].split("-")[1] == "1" * 32  # kept as given


def test_a_failing_handler_leaves_an_error_span_and_the_job_retries(
    engine: Engine, spans: InMemorySpanExporter, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()

    @registry.handler("payment.approved", max_attempts=1)
    def refuse(job: Job) -> None:
        raise ConnectionError("payment provider timed out")

    start_worker(registry)
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "payment.approved", {})
    wait_for_status(engine, job_id, JobStatus.DEAD)
    span = handler_span(spans, "payment.approved")
    assert span.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)


class JsonLines(logging.Handler):
    """What ``OUTBOX_LOG_FORMAT=json`` prints, kept in a list."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.addFilter(JobContextFilter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextlib.contextmanager
def json_lines(logger: logging.Logger) -> Iterator[JsonLines]:
    """What ``logger`` logs at INFO and above while inside, as JSON log lines."""
    lines = JsonLines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


def test_a_handlers_json_log_lines_carry_the_job_and_its_trace(
    engine: Engine, spans: InMemorySpanExporter, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    handler_log = logging.getLogger("reservations")

    @registry.handler("reservation.expired")
    def release(job: Job) -> None:
        handler_log.info("seats released")

    with json_lines(handler_log) as lines:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("business") as business, engine.begin() as conn:
            job_id = gateway.enqueue(conn, "reservation.expired", {})
        start_worker(registry)
        wait_for_status(engine, job_id, JobStatus.COMPLETED)
    (line,) = lines.lines
    span = handler_span(spans, "reservation.expired")
    assert line["message"] == "seats released"
    assert (line["job_id"], line["type"], line["attempt"]) == (job_id, "reservation.expired", 1)
    assert line["trace_id"] == f"{business.get_span_context().trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


def test_async_handlers_taking_turns_on_one_loop_log_each_their_own_job_and_span(
    engine: Engine, spans: InMemorySpanExporter, start_worker: StartWorker
) -> None:
    registry = HandlerRegistry()
    handler_log = logging.getLogger("seats")
    arrived: list[str] = []
    both: dict[str, asyncio.Event] = {}

    @registry.handler("seat.release")
    async def release(job: Job) -> None:
        handler_log.info("before %s", job.job_id)
        arrived.append(job.job_id)  # both run on the loop's one thread: no lock
        event = both.setdefault("in", asyncio.Event())
        if len(arrived) == 2:
            event.set()
        await event.wait()  # each waits inside its span until the other is inside its own
        handler_log.info("after %s", job.job_id)

    with json_lines(handler_log) as lines:
        with engine.begin() as conn:
            job_ids = {gateway.enqueue(conn, "seat.release", {"seat": n}) for n in (1, 2)}
        start_worker(registry)
        for job_id in job_ids:
            wait_for_status(engine, job_id, JobStatus.COMPLETED)
    span_of = {
        s.attributes["messaging.message.id"]: s
        for s in spans.get_finished_spans()
        if s.name == "process seat.release" and s.attributes is not None
    }
    assert set(span_of) == job_ids
    assert sorted(str(line["message"]).split()[0] for line in lines.lines) == [
        "after", "after", "before", "before",
    ]  # fmt: skip
    for line in lines.lines:
        logged_for = str(line["message"]).split()[1]
        assert line["job_id"] == logged_for
        assert line["span_id"] == f"{span_of[logged_for].context.span_id:016x}"
