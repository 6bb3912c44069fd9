"""Bad input never reaches the database and never yields a 500: one problem shape, naming the field.

Every case asserts the status, the ``application/problem+json`` shape, the field named, and that
the engine sent no SQL statement at all while answering.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gateway.app_context import GatewayConfig
from gateway.http_app import create_app
from gateway.job_types import JobTypeRegistry
from outbox.new_job import EnqueueLimits
from tests.gateway.conftest import MakeClient, auth, token_table
from tests.gateway.jobs_in_db import job_count
from tests.statement_counter import count_statements

OPS = auth("ops")
SEAT_SCHEMA = {
    "type": "object",
    "required": ["event_id", "seats"],
    "properties": {
        "event_id": {"type": "string"},
        "seats": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"}},
    },
}


def job(**fields: Any) -> dict[str, Any]:
    return {"type": "t", "payload": {"ok": 1}} | fields


def raw(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def nested(depth: int) -> str:
    return '{"type": "t", "payload": ' + "[" * depth + "]" * depth + "}"


# (id, method, path, request kwargs, status, field)
CASES: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("type missing", "POST", "/v1/jobs", {"json": {"payload": {}}}, 422, "type"),
    ("type empty", "POST", "/v1/jobs", {"json": job(type="")}, 422, "type"),
    ("type with a space", "POST", "/v1/jobs", {"json": job(type="a b")}, 422, "type"),
    ("type too long", "POST", "/v1/jobs", {"json": job(type="t" * 201)}, 422, "type"),
    ("type a number", "POST", "/v1/jobs", {"json": job(type=5)}, 422, "type"),
    ("type unknown to the registry", "POST", "/v1/jobs", {"json": job(type="mystery")}, 422,
     "type"),
    ("payload missing", "POST", "/v1/jobs", {"json": {"type": "t"}}, 422, "payload"),
    ("payload with NUL", "POST", "/v1/jobs", {"json": job(payload={"a": {"b": ["x", "\x00"]}})},
     422, "payload.a.b[1]"),
    ("payload key with NUL", "POST", "/v1/jobs", {"json": job(payload={"k\x00": 1})}, 422,
     "payload (a key)"),
    ("payload with a lone surrogate", "POST", "/v1/jobs",
     raw('{"type": "t", "payload": {"s": "\\ud800"}}'), 422, "payload.s"),
    ("payload NaN", "POST", "/v1/jobs", raw('{"type": "t", "payload": NaN}'), 422, "payload"),
    ("payload over its size limit", "POST", "/v1/jobs", {"json": job(payload="x" * 3000)}, 422,
     "payload"),
    ("payload against its schema", "POST", "/v1/jobs",
     {"json": job(type="seat.hold", payload={"event_id": "e", "seats": ["A-1", "bad"]})}, 422,
     "payload.seats[1]"),
    ("priority negative", "POST", "/v1/jobs", {"json": job(priority=-1)}, 422, "priority"),
    ("priority over smallint", "POST", "/v1/jobs", {"json": job(priority=40_000)}, 422,
     "priority"),
    ("priority a string", "POST", "/v1/jobs", {"json": job(priority="5")}, 422, "priority"),
    ("priority a boolean", "POST", "/v1/jobs", {"json": job(priority=True)}, 422, "priority"),
    ("max_attempts zero", "POST", "/v1/jobs", {"json": job(max_attempts=0)}, 422,
     "max_attempts"),
    ("max_attempts too many", "POST", "/v1/jobs", {"json": job(max_attempts=1001)}, 422,
     "max_attempts"),
    ("run_at naive", "POST", "/v1/jobs", {"json": job(run_at="2030-01-01T00:00:00")}, 422,
     "run_at"),
    ("run_at not a time", "POST", "/v1/jobs", {"json": job(run_at="tomorrow")}, 422, "run_at"),
    ("run_at a Unix timestamp", "POST", "/v1/jobs", {"json": job(run_at=1_900_000_000)}, 422,
     "run_at"),
    ("list until a number", "GET", "/v1/jobs", {"params": {"until": "-7.6e-138"}}, 422,
     "until"),
    ("run_at past year 9999 in UTC", "POST", "/v1/jobs",
     {"json": job(run_at="9999-12-31T23:00:00-05:00")}, 422, "run_at"),
    ("list until past year 9999 in UTC", "GET", "/v1/jobs",
     {"params": {"until": "9999-12-31T23:00:00-05:00"}}, 422, "until"),
    ("job_id empty", "POST", "/v1/jobs", {"json": job(job_id="")}, 422, "job_id"),
    ("job_id too long", "POST", "/v1/jobs", {"json": job(job_id="j" * 256)}, 422, "job_id"),
    ("job_id with NUL", "POST", "/v1/jobs", {"json": job(job_id="a\x00b")}, 422, "job_id"),
    ("key with a lone surrogate", "POST", "/v1/jobs",
     raw('{"type": "t", "payload": 1, "key": "k\\udc00"}'), 422, "key"),
    ("topic with a space", "POST", "/v1/jobs", {"json": job(topic="a b")}, 422, "topic"),
    ("header value not a string", "POST", "/v1/jobs", {"json": job(headers={"h": 5})}, 422,
     "headers.h"),
    ("header name empty", "POST", "/v1/jobs", {"json": job(headers={"": "v"})}, 422,
     "headers (a key)"),
    ("priority a fraction", "POST", "/v1/jobs", {"json": job(priority=2.5)}, 422, "priority"),
    ("headers over their size limit", "POST", "/v1/jobs",
     {"json": job(headers={"h": "v" * 600})}, 422, "headers"),
    ("unknown field", "POST", "/v1/jobs", {"json": job(colour="red")}, 422, "colour"),
    ("body not JSON", "POST", "/v1/jobs", raw("{type: t"), 422, "body"),
    ("body a JSON array", "POST", "/v1/jobs", {"json": [job()]}, 422, "body"),
    ("body not UTF-8", "POST", "/v1/jobs",
     {"content": b'{"type": "t", "payload": "\xff\xfe"}',
      "headers": {"Content-Type": "application/json"}}, 422, "body"),
    ("integer of 5,000 digits", "POST", "/v1/jobs", raw('{"type": "t", "payload": ' + "9" * 5000
     + "}"), 422, "body"),
    ("JSON nested past the depth limit", "POST", "/v1/jobs", raw(nested(40)), 422, "body"),
    ("JSON nested 30,000 deep", "POST", "/v1/jobs", raw(nested(30_000)), 422, "body"),
    ("body over the size limit", "POST", "/v1/jobs",
     {"json": job(payload="x" * 70_000)}, 413, None),
    ("Idempotency-Key too long", "POST", "/v1/jobs",
     {"json": job(), "headers": {"Idempotency-Key": "k" * 300}}, 422, "Idempotency-Key"),
    ("batch empty", "POST", "/v1/jobs:batch", {"json": {"jobs": []}}, 422, "jobs"),
    ("batch job with a bad priority", "POST", "/v1/jobs:batch",
     {"json": {"jobs": [job(), job(), job(priority=-3)]}}, 422, "jobs[2].priority"),
    ("batch job of an unknown type", "POST", "/v1/jobs:batch",
     {"json": {"jobs": [job(), job(type="mystery")]}}, 422, "jobs[1].type"),
    ("batch with one job_id twice, two contents", "POST", "/v1/jobs:batch",
     {"json": {"jobs": [job(job_id="x"), job(job_id="x", payload=2)]}}, 422, "jobs[1].job_id"),
    ("list limit zero", "GET", "/v1/jobs", {"params": {"limit": 0}}, 422, "limit"),
    ("list before_id past bigint", "GET", "/v1/jobs", {"params": {"before_id": 2**63}}, 422,
     "before_id"),
    ("list status unknown", "GET", "/v1/jobs", {"params": {"status": "LOST"}}, 422, "status[0]"),
    ("list since naive", "GET", "/v1/jobs", {"params": {"since": "2030-01-01T00:00:00"}}, 422,
     "since"),
    ("list type with NUL", "GET", "/v1/jobs", {"params": {"type": "a\x00"}}, 422, "type"),
    ("list with a misspelt filter", "GET", "/v1/jobs", {"params": {"stauts": "DEAD"}}, 422,
     "stauts"),
    ("get with an unknown parameter", "GET", "/v1/jobs/j", {"params": {"wiat": 5}}, 422, "wiat"),
    ("job_id in the path with NUL", "GET", "/v1/jobs/a%00b", {}, 422, "job_id"),
    ("wait negative", "GET", "/v1/jobs/j", {"params": {"wait": -1}}, 422, "wait"),
    ("wait NaN", "GET", "/v1/jobs/j", {"params": {"wait": "nan"}}, 422, "wait"),
    ("cancel without a reason", "POST", "/v1/jobs/j/cancel", {"json": {}}, 422, "reason"),
    ("retry with an empty reason", "POST", "/v1/jobs/j/retry", {"json": {"reason": ""}}, 422,
     "reason"),
    ("cancel reason with NUL", "POST", "/v1/jobs/j/cancel", {"json": {"reason": "a\x00"}}, 422,
     "reason"),
]  # fmt: skip


@pytest.fixture(scope="module")
def strict_client(module_engine: Engine) -> Iterator[TestClient]:
    """One app for the module: bad input writes nothing, so the cases can share a database."""
    config = GatewayConfig(
        tokens=token_table(),
        limits=EnqueueLimits(max_payload_bytes=2048, max_headers_bytes=512),
        max_body_bytes=65_536,
        max_json_depth=32,
        job_types=JobTypeRegistry({"t": None, "seat.hold": SEAT_SCHEMA}),
    )
    with TestClient(create_app(module_engine, config), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_a_problem_naming_the_field_and_touches_no_database(
    strict_client: TestClient,
    module_engine: Engine,
    method: str,
    path: str,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    kwargs = dict(request_kwargs)
    kwargs["headers"] = OPS | kwargs.get("headers", {})
    with count_statements(module_engine) as sent:
        response = strict_client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail", "errors"} <= problem.keys()
    assert problem["status"] == status
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert sent == []
    assert job_count(module_engine) == 0


def test_there_are_at_least_twenty_bad_inputs() -> None:
    assert len(CASES) >= 20


def test_a_payload_the_schema_accepts_is_stored(make_client: MakeClient) -> None:
    client = make_client(job_types=JobTypeRegistry({"seat.hold": SEAT_SCHEMA}))
    body = job(type="seat.hold", payload={"event_id": "e", "seats": ["A-1", "B-22"]})
    assert client.post("/v1/jobs", json=body, headers=OPS).status_code == 201


def test_a_body_sent_in_chunks_past_the_limit_is_refused(
    strict_client: TestClient, module_engine: Engine
) -> None:
    """No Content-Length to trust: the limit is counted on the bytes as they arrive."""

    def chunks() -> Any:
        yield b'{"type": "t", "payload": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    headers = OPS | {"Content-Type": "application/json"}
    response = strict_client.post("/v1/jobs", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert job_count(module_engine) == 0


def test_errors_of_several_fields_are_all_named(strict_client: TestClient) -> None:
    body = job(type="", priority=-1, max_attempts=0)
    problem = strict_client.post("/v1/jobs", json=body, headers=OPS).json()
    assert {e["field"] for e in problem["errors"]} == {"type", "priority", "max_attempts"}
    assert json.dumps(problem)  # plain JSON all the way down
