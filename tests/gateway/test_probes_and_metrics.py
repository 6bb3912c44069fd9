"""/healthz, /readyz (database and schema), /metrics (a registry of the app's own), OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from gateway.app_context import GatewayConfig
from gateway.http_app import create_app
from outbox.database import create_engine
from tests.gateway.conftest import auth, token_table

W = auth("writer")


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health_and_readiness_on_a_migrated_database(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "reason": None}
    assert client.get("/readyz").status_code == 200


def test_not_ready_when_the_schema_is_not_at_head(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        with TestClient(create_app(engine, GatewayConfig(tokens=token_table()))) as client:
            response = client.get("/readyz")
            assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert "migration head" in response.json()["reason"]


def test_not_ready_and_503_for_writes_when_the_database_is_unreachable() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        app = create_app(engine, GatewayConfig(tokens=token_table()))
        with TestClient(app, raise_server_exceptions=False) as client:
            ready = client.get("/readyz")
            write = client.post("/v1/jobs", json={"type": "t", "payload": {}}, headers=W)
    finally:
        engine.dispose()
    assert ready.status_code == 503
    assert "unreachable" in ready.json()["reason"]
    assert write.status_code == 503
    assert write.headers["retry-after"] == "1"


def test_metrics_count_requests_enqueued_jobs_and_rejections(client: TestClient) -> None:
    client.post("/v1/jobs:batch", json={"jobs": [{"type": "a", "payload": i} for i in range(3)]},
                headers=W)  # fmt: skip
    client.post("/v1/jobs", json={"type": "b", "payload": 1, "job_id": "x"}, headers=W)
    client.post("/v1/jobs", json={"type": "b", "payload": 1, "job_id": "x"}, headers=W)  # repeat
    client.post("/v1/jobs", json={"type": "b", "payload": 2, "job_id": "x"}, headers=W)  # 409
    client.post("/v1/jobs", json={"type": "b", "payload": 1})  # no token
    client.get("/v1/jobs/x", headers=W)  # wrong scope
    client.post("/v1/jobs", json={"type": "", "payload": 1}, headers=W)  # invalid
    client.get("/no/such/route")
    found = samples(client)
    assert found[("outbox_gateway_jobs_enqueued_total", (("type", "a"),))] == 3
    assert found[("outbox_gateway_jobs_enqueued_total", (("type", "b"),))] == 1
    for reason in ("conflict", "unauthenticated", "forbidden", "invalid"):
        assert found[("outbox_gateway_rejected_total", (("reason", reason),))] == 1
    by_status = {
        labels: value for (name, labels), value in found.items()
        if name == "outbox_gateway_requests_total"
    }  # fmt: skip
    assert by_status[(("method", "POST"), ("route", "/v1/jobs"), ("status", "201"))] == 1
    assert by_status[(("method", "POST"), ("route", "/v1/jobs"), ("status", "200"))] == 1
    assert by_status[(("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "403"))] == 1
    assert by_status[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    count_key = (
        "outbox_gateway_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/jobs:batch")),
    )
    assert found[count_key] == 1


@pytest.fixture
def two_apps(engine: Engine) -> Iterator[tuple[TestClient, TestClient]]:
    config = GatewayConfig(tokens=token_table())
    with (
        TestClient(create_app(engine, config)) as one,
        TestClient(create_app(engine, config)) as two,
    ):
        yield one, two


def test_each_app_has_a_registry_of_its_own(two_apps: tuple[TestClient, TestClient]) -> None:
    one, two = two_apps
    one.post("/v1/jobs", json={"type": "a", "payload": 1}, headers=W)
    key = ("outbox_gateway_jobs_enqueued_total", (("type", "a"),))
    assert samples(one)[key] == 1
    assert key not in samples(two)


def test_metrics_go_to_the_registry_given(engine: Engine) -> None:
    registry = CollectorRegistry()
    with TestClient(
        create_app(engine, GatewayConfig(tokens=token_table()), registry=registry)
    ) as c:
        c.get("/healthz")
    assert (
        registry.get_sample_value(
            "outbox_gateway_requests_total", {"route": "/healthz", "method": "GET", "status": "200"}
        )
        == 1
    )


def test_the_openapi_document_declares_security_from_the_route_table(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/v1/jobs"]["post"]["security"] == [{"bearerAuth": []}]
    assert "jobs:admin" in paths["/v1/jobs/{job_id}/retry"]["post"]["description"]
    errors = paths["/v1/jobs"]["post"]["responses"]["422"]["content"]
    assert list(errors) == ["application/problem+json"]
    assert document["components"]["schemas"]["JobBatch"]["properties"]["jobs"]["maxItems"] == 500
