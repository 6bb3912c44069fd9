"""Submitting, reading and listing jobs over HTTP, against the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from outbox import queries
from tests.gateway.conftest import MakeClient, auth
from tests.gateway.jobs_in_db import claim, job_count, publish

W, R = auth("writer"), auth("reader")


def test_post_job_stores_every_field_and_answers_201_with_it(
    client: TestClient, engine: Engine
) -> None:
    body = {
        "type": "email.send", "payload": {"to": "a@example.com", "n": [1, 2.5]},
        "job_id": "mail-1", "key": "user-7", "topic": "emails", "priority": 9,
        "run_at": "2031-05-06T07:08:09+02:00", "max_attempts": 4,
        "headers": {"traceparent": "00-abc-def-01"},
    }  # fmt: skip
    response = client.post("/v1/jobs", json=body, headers=W)
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/jobs/mail-1"
    shown = response.json()
    assert (shown["job_id"], shown["status"], shown["attempts"]) == ("mail-1", "PENDING", 0)
    with engine.connect() as conn:
        record = queries.get_job(conn, "mail-1")
    assert record is not None
    assert (record.type, record.payload, record.key, record.topic, record.priority) == (
        "email.send", {"to": "a@example.com", "n": [1, 2.5]}, "user-7", "emails", 9,
    )  # fmt: skip
    assert record.run_at == datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC)
    assert (record.max_attempts, record.headers) == (4, {"traceparent": "00-abc-def-01"})


def test_an_integral_float_counts_as_an_integer_as_json_schema_says(
    client: TestClient, engine: Engine
) -> None:
    body = {"type": "t", "payload": {}, "job_id": "f", "priority": 3.0, "max_attempts": 2.0}
    assert client.post("/v1/jobs", json=body, headers=W).status_code == 201
    with engine.connect() as conn:
        record = queries.get_job(conn, "f")
    assert record is not None
    assert (record.priority, record.max_attempts) == (3, 2)


def test_offsets_postgresql_refuses_are_stored_as_the_same_instant_in_utc(
    client: TestClient, engine: Engine
) -> None:
    """Python allows UTC offsets to 23:59, PostgreSQL to 15:59 (found by schemathesis)."""
    body = {"type": "t", "payload": {}, "job_id": "far", "run_at": "2031-01-01T00:00:00-23:10"}
    assert client.post("/v1/jobs", json=body, headers=W).status_code == 201
    with engine.connect() as conn:
        record = queries.get_job(conn, "far")
    assert record is not None
    assert record.run_at == datetime(2031, 1, 1, 23, 10, tzinfo=UTC)
    since = {"since": "2000-01-01T00:00:00+23:59"}
    assert client.get("/v1/jobs", params=since, headers=R).status_code == 200


def test_post_without_job_id_generates_one_and_uses_it_as_the_key(client: TestClient) -> None:
    shown = client.post("/v1/jobs", json={"type": "t", "payload": None}, headers=W).json()
    assert len(shown["job_id"]) == 36
    assert shown["key"] == shown["job_id"]


def test_get_shows_attempts_progress_result_and_publish_receipt(
    client: TestClient, engine: Engine
) -> None:
    client.post("/v1/jobs", json={"type": "t", "payload": {}, "job_id": "j"}, headers=W)
    publish(engine, "j", {"topic": "jobs", "partition": 0, "offset": 41})
    lease = claim(engine, "j")
    with engine.begin() as conn:
        queries.report_progress(conn, lease, '{"done": 3, "of": 4}')
    running = client.get("/v1/jobs/j", headers=R).json()
    assert (running["status"], running["attempts"], running["progress"]) == (
        "PROCESSING", 1, {"done": 3, "of": 4},
    )  # fmt: skip
    assert running["publish_receipt"] == {"topic": "jobs", "partition": 0, "offset": 41}
    with engine.begin() as conn:
        queries.schedule_retry(conn, lease, retry_in=timedelta(0), error="timeout talking to X")
    failed = client.get("/v1/jobs/j", headers=R).json()
    assert (failed["status"], failed["last_error"]) == ("FAILED", "timeout talking to X")


def test_get_of_an_unknown_job_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/jobs/nope", headers=R)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "nope" in response.json()["detail"]


def test_job_ids_with_slashes_and_spaces_round_trip_through_the_path(client: TestClient) -> None:
    job_id = "orders/2031 06/#1?x=1"
    client.post("/v1/jobs", json={"type": "t", "payload": 1, "job_id": job_id}, headers=W)
    response = client.get(f"/v1/jobs/{quote(job_id, safe='')}", headers=R)
    assert response.status_code == 200
    assert response.json()["job_id"] == job_id


def test_batch_is_one_transaction_and_answers_each_job_id(
    client: TestClient, engine: Engine
) -> None:
    jobs = [{"type": "sms.send", "payload": {"i": i}, "key": "k"} for i in range(5)]
    jobs[2]["job_id"] = "third"
    response = client.post("/v1/jobs:batch", json={"jobs": jobs}, headers=W)
    assert response.status_code == 201
    items = response.json()["jobs"]
    assert items[2] == {"job_id": "third", "created": True}
    assert job_count(engine) == 5
    listed = client.get("/v1/jobs", params={"key": "k", "limit": 10}, headers=R).json()["jobs"]
    assert [j["payload"]["i"] for j in listed] == [4, 3, 2, 1, 0]  # newest first


def test_batch_with_one_bad_job_writes_nothing_and_names_its_position(
    client: TestClient, engine: Engine
) -> None:
    jobs = [{"type": "t", "payload": {}} for _ in range(4)]
    jobs[3]["payload"] = {"name": "a\u0000b"}
    response = client.post("/v1/jobs:batch", json={"jobs": jobs}, headers=W)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "jobs[3].payload.name"
    assert job_count(engine) == 0


def test_batch_with_a_conflicting_job_writes_nothing(client: TestClient, engine: Engine) -> None:
    client.post("/v1/jobs", json={"type": "t", "payload": 1, "job_id": "taken"}, headers=W)
    jobs = [{"type": "t", "payload": 1}, {"type": "t", "payload": 2, "job_id": "taken"}]
    response = client.post("/v1/jobs:batch", json={"jobs": jobs}, headers=W)
    assert response.status_code == 409
    assert response.json()["job_ids"] == ["taken"]
    assert job_count(engine) == 1  # the first job of the batch was rolled back with it


def test_batch_larger_than_the_configured_maximum_is_refused(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(max_batch=3)
    jobs = [{"type": "t", "payload": i} for i in range(4)]
    response = client.post("/v1/jobs:batch", json={"jobs": jobs}, headers=W)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "jobs"
    assert job_count(engine) == 0
    assert client.post("/v1/jobs:batch", json={"jobs": jobs[:3]}, headers=W).status_code == 201


def test_list_filters_and_pages_with_the_next_cursor(client: TestClient) -> None:
    for i in range(7):
        job = {"type": "a" if i % 2 else "b", "payload": i, "job_id": f"j{i}"}
        client.post("/v1/jobs", json=job, headers=W)
    seen, before = [], None
    while True:
        params: dict[str, object] = {"type": "b", "limit": 2}
        if before is not None:
            params["before_id"] = before
        page = client.get("/v1/jobs", params=params, headers=R).json()
        seen += [j["job_id"] for j in page["jobs"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == ["j6", "j4", "j2", "j0"]


def test_list_filters_by_status_and_creation_time(client: TestClient, engine: Engine) -> None:
    for i in range(3):
        client.post("/v1/jobs", json={"type": "t", "payload": i, "job_id": f"j{i}"}, headers=W)
    claim(engine, "j1")
    processing = client.get("/v1/jobs", params={"status": "PROCESSING"}, headers=R).json()
    assert [j["job_id"] for j in processing["jobs"]] == ["j1"]
    both = client.get("/v1/jobs", params=[("status", "PROCESSING"), ("status", "PENDING")],
                      headers=R).json()  # fmt: skip
    assert len(both["jobs"]) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/v1/jobs", params={"since": future}, headers=R).json()["jobs"] == []
    assert len(client.get("/v1/jobs", params={"until": future}, headers=R).json()["jobs"]) == 3
