"""The worker's KEDA ScaledObject: a CRD kubernetes-validate does not know, so it is validated
against tests/deploy/schemas/keda-scaledobject-v1alpha1.schema.json (written from KEDA's CRD and
its postgresql scaler's documented metadata), and its backlog query runs on a real database.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.schema import jobs
from outbox.states import JobStatus
from tests.deploy.deploy_files import (
    SCALED_OBJECT_SCHEMA,
    Resource,
    container_env,
    named,
    only_container,
    resources_of,
)


def scaled_object() -> Resource:
    (found,) = resources_of("ScaledObject")
    return found


def validator() -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def postgresql_trigger() -> dict[str, Any]:
    (trigger,) = [t for t in scaled_object()["spec"]["triggers"] if t["type"] == "postgresql"]
    return trigger


def test_scaled_object_matches_the_schema() -> None:
    errors = [e.message for e in validator().iter_errors(scaled_object())]
    assert errors == []


def misspelt_min_replicas(so: Resource) -> None:
    so["spec"]["minReplicaCounts"] = so["spec"].pop("minReplicaCount")


def target_as_a_number(so: Resource) -> None:
    so["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = 100  # KEDA wants strings


def postgresql_without_a_connection(so: Resource) -> None:
    del so["spec"]["triggers"][0]["metadata"]["connectionFromEnv"]


def target_without_a_name(so: Resource) -> None:
    del so["spec"]["scaleTargetRef"]["name"]


@pytest.mark.parametrize(
    "break_it",
    [misspelt_min_replicas, target_as_a_number, postgresql_without_a_connection,
     target_without_a_name],
)  # fmt: skip
def test_a_broken_scaled_object_is_rejected(break_it: Callable[[Resource], None]) -> None:
    broken = copy.deepcopy(scaled_object())
    break_it(broken)
    assert list(validator().iter_errors(broken)), "the schema let the breakage through"


def test_scaled_object_scales_the_worker_deployment_and_never_to_zero() -> None:
    spec = scaled_object()["spec"]
    target = spec["scaleTargetRef"]
    worker = named("Deployment", target["name"])
    assert worker["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    assert target.get("kind", "Deployment") == "Deployment"
    # Promotion of due retries, lease rescue, pruning and cron run inside workers.
    assert spec["minReplicaCount"] >= 1
    assert "replicas" not in worker["spec"], "KEDA owns the worker's replica count"


def test_keda_reads_a_libpq_database_url_the_worker_itself_gets() -> None:
    variable = postgresql_trigger()["metadata"]["connectionFromEnv"]
    env = container_env(only_container(named("Deployment", "outbox-worker")))
    assert variable in env
    # KEDA's PostgreSQL driver (pgx) understands postgresql://, not SQLAlchemy's +psycopg.
    assert env[variable].startswith("postgresql://")


def test_backlog_query_counts_due_jobs_waiting_for_a_worker(engine: Engine) -> None:
    now = datetime.now(UTC)
    times = {"due": now - timedelta(minutes=1), "later": now + timedelta(hours=1)}
    with engine.begin() as conn:
        for status in JobStatus:
            for due, run_at in times.items():
                job_id = f"{status.value}-{due}"
                gateway.enqueue(conn, "backlog.probe", {}, job_id=job_id, run_at=run_at)
                conn.execute(sa.update(jobs).where(jobs.c.job_id == job_id).values(status=status))
    query = postgresql_trigger()["metadata"]["query"]
    with engine.connect() as conn:
        backlog = conn.execute(sa.text(query)).scalar_one()
    waiting = {JobStatus.PENDING, JobStatus.PUBLISHED, JobStatus.FAILED}
    assert isinstance(backlog, int)
    assert backlog == len(waiting)
