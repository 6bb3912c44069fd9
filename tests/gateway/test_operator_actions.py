"""Operator retry and cancel: guarded moves, a required reason, and an audit row in the same
transaction as the change."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from outbox import queries
from tests.gateway.conftest import auth
from tests.gateway.jobs_in_db import audit_rows, complete, kill
from tests.operator_cli import audit_json, invoke

W, A = auth("writer"), auth("admin")


def _submit(client: TestClient, job_id: str) -> None:
    body = {"type": "t", "payload": {}, "job_id": job_id}
    assert client.post("/v1/jobs", json=body, headers=W).status_code == 201


def test_retry_of_a_dead_job_makes_it_pending_with_fresh_attempts_and_audits_it(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "j")
    kill(engine, "j", error="upstream 500")
    response = client.post("/v1/jobs/j/retry", json={"reason": "upstream fixed"}, headers=A)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["attempts"]) == ("PENDING", 0)
    [row] = audit_rows(engine)
    assert (row.actor, row.action, row.filter, row.count, row.reason) == (
        "admin", "retry", {"job_id": "j"}, 1, "upstream fixed",
    )  # fmt: skip
    with engine.connect() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
    assert row.at <= now


def test_cancel_of_a_pending_job_keeps_the_reason_as_its_last_error(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "j")
    response = client.post("/v1/jobs/j/cancel", json={"reason": "customer left"}, headers=A)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["last_error"]) == (
        "CANCELLED", "customer left",
    )  # fmt: skip
    assert [(r.action, r.count) for r in audit_rows(engine)] == [("cancel", 1)]


def test_an_action_the_state_does_not_allow_is_a_409_and_writes_no_audit(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "done")
    complete(engine, "done")
    cancel = client.post("/v1/jobs/done/cancel", json={"reason": "too late"}, headers=A)
    retry = client.post("/v1/jobs/done/retry", json={"reason": "again?"}, headers=A)
    assert (cancel.status_code, retry.status_code) == (409, 409)
    assert "COMPLETED" in cancel.json()["detail"]
    assert cancel.json()["job_ids"] == ["done"]
    assert audit_rows(engine) == []
    with engine.connect() as conn:
        record = queries.get_job(conn, "done")
    assert record is not None
    assert record.status == "COMPLETED"


def test_an_action_on_an_unknown_job_is_a_404(client: TestClient, engine: Engine) -> None:
    response = client.post("/v1/jobs/ghost/retry", json={"reason": "why not"}, headers=A)
    assert response.status_code == 404
    assert audit_rows(engine) == []


def test_the_change_and_its_audit_commit_together_or_not_at_all(
    client: TestClient, engine: Engine
) -> None:
    _submit(client, "j")
    kill(engine, "j")
    with engine.begin() as conn:  # make every audit insert fail
        conn.execute(sa.text("ALTER TABLE outbox_audit ADD CONSTRAINT refuse CHECK (false)"))
    response = client.post("/v1/jobs/j/retry", json={"reason": "r"}, headers=A)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    with engine.connect() as conn:
        record = queries.get_job(conn, "j")
    assert record is not None
    assert record.status == "DEAD"


def test_writers_and_readers_cannot_retry_or_cancel(client: TestClient) -> None:
    _submit(client, "j")
    for who in ("writer", "reader"):
        response = client.post("/v1/jobs/j/cancel", json={"reason": "r"}, headers=auth(who))
        assert response.status_code == 403


def test_gateway_and_cli_actions_share_one_audit_trail(
    client: TestClient, engine: Engine, database_url: str
) -> None:
    for job_id in ("j1", "j2", "j3"):
        _submit(client, job_id)
    assert client.post("/v1/jobs/j1/cancel", json={"reason": "dup"}, headers=A).status_code == 200
    cli = invoke(database_url, "jobs", "cancel", "--id", "j2", "--id", "j3", "--reason", "batch",
                 "--actor", "carol", "--yes")  # fmt: skip
    assert cli.exit_code == 0, cli.output
    listed = audit_json(database_url, "--action", "cancel")
    assert [(r["actor"], r["count"], r["reason"], r["filter"].get("job_ids")) for r in listed] == [
        ("carol", 2, "batch", ["j2", "j3"]), ("admin", 1, "dup", None),
    ]  # fmt: skip
    assert listed[1]["filter"] == {"job_id": "j1"}
