"""GET /v1/jobs/{job_id}?wait=: answers when the job finishes, or when the wait ends."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.gateway.conftest import MakeClient, auth
from tests.gateway.jobs_in_db import complete
from tests.statement_counter import count_statements
from tests.waiting import wait_until

W, R = auth("writer"), auth("reader")


def _submit(client: TestClient, job_id: str) -> None:
    response = client.post(
        "/v1/jobs", json={"type": "t", "payload": {}, "job_id": job_id}, headers=W
    )
    assert response.status_code == 201


def _reads_of_job(sent: list[str]) -> int:
    return sum(1 for s in sent if s.lstrip().startswith("SELECT") and "outbox_jobs" in s)


def test_a_waiting_get_answers_as_soon_as_the_job_completes(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "j")
    with count_statements(engine) as sent, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(client.get, "/v1/jobs/j", params={"wait": 20}, headers=R)
        # The server has read the job (PENDING) at least twice: it is polling, not answering.
        assert wait_until(lambda: _reads_of_job(sent) >= 2)
        assert not waiting.done()
        complete(engine, "j")
        response = waiting.result(timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "COMPLETED"
    assert response.json()["result"] == {"ok": True}
    assert time.monotonic() - started < 10  # far less than the 20 s asked for


def test_a_wait_that_ends_returns_the_job_as_it_is(client: TestClient) -> None:
    _submit(client, "j")
    started = time.monotonic()
    response = client.get("/v1/jobs/j", params={"wait": 0.3}, headers=R)
    assert response.json()["status"] == "PENDING"
    assert time.monotonic() - started >= 0.3


def test_the_wait_is_capped_by_the_configured_maximum(make_client: MakeClient) -> None:
    client = make_client(max_wait_seconds=0.2)
    _submit(client, "j")
    started = time.monotonic()
    response = client.get("/v1/jobs/j", params={"wait": 3600}, headers=R)
    assert response.status_code == 200
    assert time.monotonic() - started < 5


def test_a_finished_job_answers_at_once_however_long_the_wait(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "j")
    complete(engine, "j")
    started = time.monotonic()
    assert client.get("/v1/jobs/j", params={"wait": 30}, headers=R).json()["status"] == "COMPLETED"
    assert time.monotonic() - started < 5


def test_waiting_clients_block_neither_the_event_loop_nor_the_thread_pool(
    client: TestClient, engine: Engine
) -> None:
    """More waiting clients than the thread pool has threads (40), and other requests still pass."""
    _submit(client, "j")
    waiters = 50
    with count_statements(engine) as sent, ThreadPoolExecutor(waiters) as pool:
        waiting = [
            pool.submit(client.get, "/v1/jobs/j", params={"wait": 30}, headers=R)
            for _ in range(waiters)
        ]
        assert wait_until(lambda: _reads_of_job(sent) >= 2 * waiters, timeout=20)
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        _submit(client, "other")  # a write runs in the thread pool: it must not be exhausted
        assert time.monotonic() - started < 2
        assert not any(w.done() for w in waiting)
        complete(engine, "j")
        statuses = {w.result(timeout=15).json()["status"] for w in waiting}
    assert statuses == {"COMPLETED"}
