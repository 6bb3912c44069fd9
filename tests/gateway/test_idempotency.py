"""Idempotent submission: job_id in the body or the Idempotency-Key header; repeat -> 200."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.gateway.conftest import auth
from tests.gateway.jobs_in_db import complete, job_count

W = auth("writer")
JOB = {"type": "invoice.issue", "payload": {"order": 17, "lines": [1, 2]}, "key": "cust-3"}


def test_a_repeat_with_the_same_content_returns_200_and_the_original_job(
    client: TestClient, engine: Engine
) -> None:
    first = client.post("/v1/jobs", json=JOB | {"job_id": "inv-17"}, headers=W)
    complete(engine, "inv-17")  # the original moved on meanwhile
    repeat = client.post("/v1/jobs", json=JOB | {"job_id": "inv-17"}, headers=W)
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json()["status"] == "COMPLETED"  # the original, not a new job
    assert repeat.json()["created_at"] == first.json()["created_at"]
    assert job_count(engine) == 1


def test_key_order_inside_the_payload_does_not_make_content_different(
    client: TestClient, engine: Engine
) -> None:
    client.post("/v1/jobs", json=JOB | {"job_id": "x"}, headers=W)
    reordered = JOB | {"job_id": "x", "payload": {"lines": [1, 2], "order": 17}}
    assert client.post("/v1/jobs", json=reordered, headers=W).status_code == 200
    assert job_count(engine) == 1


@pytest.mark.parametrize(
    "change",
    [{"type": "other"}, {"payload": {"order": 18}}, {"key": "cust-4"}, {"topic": "elsewhere"}],
)
def test_a_repeat_with_other_content_is_a_409_naming_the_job_id(
    client: TestClient, engine: Engine, change: dict[str, object]
) -> None:
    client.post("/v1/jobs", json=JOB | {"job_id": "inv-17"}, headers=W)
    response = client.post("/v1/jobs", json=JOB | change | {"job_id": "inv-17"}, headers=W)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["job_ids"] == ["inv-17"]
    assert problem["errors"][0]["field"] == "job_id"
    assert "inv-17" in problem["detail"]
    assert job_count(engine) == 1


def test_the_idempotency_key_header_is_the_job_id(client: TestClient, engine: Engine) -> None:
    headers = W | {"Idempotency-Key": "req-9f1"}
    first = client.post("/v1/jobs", json=JOB, headers=headers)
    again = client.post("/v1/jobs", json=JOB, headers=headers)
    other = client.post("/v1/jobs", json=JOB | {"payload": {}}, headers=headers)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert first.json()["job_id"] == "req-9f1"
    assert job_count(engine) == 1


def test_a_header_and_a_body_job_id_that_differ_are_refused(
    client: TestClient, engine: Engine
) -> None:
    headers = W | {"Idempotency-Key": "a"}
    response = client.post("/v1/jobs", json=JOB | {"job_id": "b"}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "job_id"
    assert job_count(engine) == 0


def test_a_repeated_batch_answers_200_and_marks_nothing_created(
    client: TestClient, engine: Engine
) -> None:
    batch = {"jobs": [JOB | {"job_id": f"b{i}"} for i in range(3)]}
    first = client.post("/v1/jobs:batch", json=batch, headers=W)
    again = client.post("/v1/jobs:batch", json=batch, headers=W)
    assert (first.status_code, again.status_code) == (201, 200)
    assert [j["created"] for j in again.json()["jobs"]] == [False, False, False]
    assert job_count(engine) == 3
