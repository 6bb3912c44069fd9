"""Rate limits per token (429) and backpressure per job type (503), both with Retry-After."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gateway.backpressure import BacklogGuard
from gateway.body_limit import json_depth
from gateway.rate_limit import TokenBuckets
from tests.gateway.conftest import FakeClock, MakeClient, auth
from tests.gateway.jobs_in_db import complete, job_count
from tests.statement_counter import count_statements

W, R = auth("writer"), auth("reader")


def _post(client: TestClient, job_type: str = "t", headers: dict[str, str] = W) -> int:
    return client.post(
        "/v1/jobs", json={"type": job_type, "payload": {}}, headers=headers
    ).status_code


def test_a_token_over_its_rate_gets_429_with_retry_after(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = make_client(rate_per_second=0.5, rate_burst=2, clock=clock)
    assert [_post(client), _post(client)] == [201, 201]
    refused = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=W)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # one request per 2 s
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/jobs", headers=R).status_code == 200  # another token, another bucket
    clock.advance(2)
    assert _post(client) == 201


def test_the_rate_limit_answers_before_any_database_work(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(rate_per_second=1, rate_burst=1, clock=FakeClock())
    assert _post(client) == 201
    with count_statements(engine) as sent:
        assert _post(client) == 429
    assert sent == []


def test_public_routes_have_no_rate_limit(make_client: MakeClient) -> None:
    client = make_client(rate_per_second=1, rate_burst=1, clock=FakeClock())
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}


def test_a_type_over_its_backlog_bound_gets_503_and_others_pass(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(backlog_bounds={"email.send": 3}, backlog_cache_seconds=0)
    assert [_post(client, "email.send") for _ in range(3)] == [201, 201, 201]
    refused = client.post("/v1/jobs", json={"type": "email.send", "payload": {}}, headers=W)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert "email.send" in refused.json()["detail"]
    assert _post(client, "sms.send") == 201  # unbounded type
    assert job_count(engine) == 4


def test_the_backlog_shrinks_as_jobs_finish_and_submissions_resume(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(backlog_bounds={"*": 2}, backlog_cache_seconds=0)
    for i in range(2):
        job = {"type": "t", "payload": {}, "job_id": f"j{i}"}
        assert client.post("/v1/jobs", json=job, headers=W).status_code == 201
    assert _post(client) == 503
    complete(engine, "j0")
    assert _post(client) == 201


def test_a_batch_that_includes_a_full_type_is_refused_whole(
    make_client: MakeClient, engine: Engine
) -> None:
    client = make_client(backlog_bounds={"full": 1}, backlog_cache_seconds=0)
    assert _post(client, "full") == 201
    jobs = [{"type": "fine", "payload": 1}, {"type": "full", "payload": 2}]
    assert client.post("/v1/jobs:batch", json={"jobs": jobs}, headers=W).status_code == 503
    assert job_count(engine) == 1


def test_the_backlog_is_counted_once_per_cache_period_and_counts_accepted_jobs(
    make_client: MakeClient, engine: Engine
) -> None:
    clock = FakeClock()
    client = make_client(backlog_bounds={"t": 3}, backlog_cache_seconds=1.0, clock=clock)
    with count_statements(engine) as sent:
        results = [_post(client) for _ in range(4)]
    counts = [s for s in sent if "count(" in s]
    assert len(counts) == 1  # one count query for four submissions within the second
    assert results == [201, 201, 201, 503]  # the cache added each accepted job itself
    clock.advance(1.0)
    with count_statements(engine) as sent:
        assert _post(client) == 503
    assert len([s for s in sent if "count(" in s]) == 1  # stale after a second: counted again


def test_token_buckets_refill_at_their_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=10, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.1)
    assert buckets.take("b") == 0.0
    clock.advance(10)  # a long pause refills to the burst, not beyond
    assert [buckets.take("a") == 0.0 for _ in range(4)] == [True, True, True, False]
    assert TokenBuckets(rate=0, burst=1).take("a") == 0.0  # rate 0: no limit


def test_backlog_guard_uses_the_star_bound_for_unnamed_types() -> None:
    asked: list[tuple[str, int]] = []

    def count(job_type: str, cap: int) -> int:
        asked.append((job_type, cap))
        return 5

    guard = BacklogGuard({"a": 10, "*": 5}, count, ttl=0)
    assert guard.over_bound({"a": 1}) is None
    assert guard.over_bound({"a": 1, "other": 1}) == "other"
    assert asked == [("a", 10), ("a", 10), ("other", 5)]  # counted only up to the bound
    assert BacklogGuard({}, count).over_bound({"x": 1}) is None


@pytest.mark.parametrize(
    ("document", "depth"),
    [(b"1", 0), (b"[]", 1), (b'{"a": [[1], {"b": 2}]}', 3), (b'["[[[[", "]"]', 1),
     (b'{"s": "\\"[[["}', 1), (b"[" * 50 + b"]" * 50, 50)],
)  # fmt: skip
def test_json_depth_ignores_brackets_inside_strings(document: bytes, depth: int) -> None:
    assert json_depth(document) == depth
