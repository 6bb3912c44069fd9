"""The least-privilege roles of deploy/sql/roles.sql, proven by connecting as each of them.

Each service does its own work under its role, and is refused what it has no business doing:
the gateway cannot change a job's status, the relay cannot rewrite a payload, and no role at
all can change or delete an audit row.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.database import create_engine
from outbox.probe_server import schema_readiness
from outbox.schema import jobs
from relay.relay_loop import Relay
from relay.routing import Router
from tests.acking_publisher import AckingPublisher
from tests.waiting import wait_until
from worker import HandlerRegistry, Job, Worker, WorkerConfig

ROLES_SQL = Path(__file__).resolve().parents[2] / "deploy" / "sql" / "roles.sql"
ROLES = ("outbox_gateway", "outbox_relay", "outbox_worker", "outbox_operator")

RoleEngine = Callable[[str], Engine]


@pytest.fixture
def as_role(database_url: str) -> Iterator[RoleEngine]:
    """Apply roles.sql (twice: it must be idempotent), then engines logged in as each role."""
    admin_url = sa.make_url(database_url)
    conninfo = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    script = ROLES_SQL.read_text()
    users: list[str] = []
    engines: list[Engine] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type] # a trusted file, not user input
        conn.execute(script)  # type: ignore[arg-type]

        def login(role: str) -> Engine:
            user = f"{role}_{uuid.uuid4().hex[:8]}"
            conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {role}")  # type: ignore[arg-type]
            users.append(user)
            engine = create_engine(admin_url.set(username=user).render_as_string(False))
            engines.append(engine)
            return engine

        yield login
        for engine in engines:
            engine.dispose()
        for user in users:
            conn.execute(f"DROP OWNED BY {user}")  # type: ignore[arg-type]
            conn.execute(f"DROP ROLE {user}")  # type: ignore[arg-type]


def refused(engine: Engine, statement: str) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    except sa.exc.ProgrammingError as exc:
        return isinstance(exc.orig, psycopg.errors.InsufficientPrivilege)
    return False


def audit_row(engine: Engine) -> int:
    with engine.begin() as conn:
        return queries.record_audit(
            conn, actor="test", action="retry", job_filter={}, count=0, reason="role test"
        )


def status_of(engine: Engine, job_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(jobs.c.status).where(jobs.c.job_id == job_id)).scalar())


def test_every_role_reads_the_schema_revision(as_role: RoleEngine) -> None:
    for role in ROLES:
        assert schema_readiness(as_role(role))() is None, role


def test_the_gateway_enqueues_and_audits_but_cannot_change_a_job(as_role: RoleEngine) -> None:
    engine = as_role("outbox_gateway")
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "reservation.expired", {"seats": 1})
    assert status_of(engine, job_id) == "PENDING"
    audit_row(engine)
    assert refused(engine, "UPDATE outbox_jobs SET status = 'CANCELLED'")
    assert refused(engine, "DELETE FROM outbox_jobs")


def test_the_relay_marks_published_but_cannot_rewrite_or_add_jobs(
    as_role: RoleEngine, engine: Engine
) -> None:
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "reservation.expired", {"seats": 1})
    relay_engine = as_role("outbox_relay")
    relay = Relay(relay_engine, AckingPublisher(), Router("jobs"))
    try:
        assert relay.run_once().published == 1
    finally:
        relay.close()
    assert status_of(engine, job_id) == "PUBLISHED"
    assert refused(relay_engine, "UPDATE outbox_jobs SET payload = '{}'")
    assert refused(
        relay_engine, "INSERT INTO outbox_jobs (job_id, type, key) VALUES ('x', 't', 'k')"
    )
    assert refused(relay_engine, "DELETE FROM outbox_jobs")


def test_the_worker_runs_a_job_to_completion_under_its_role(
    as_role: RoleEngine, engine: Engine
) -> None:
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "reservation.expired", {"seats": 1})
    registry = HandlerRegistry()
    done = threading.Event()

    @registry.handler("reservation.expired")
    def release(job: Job) -> None:
        done.set()

    worker = Worker(
        as_role("outbox_worker"),
        registry,
        WorkerConfig(poll_interval=0.05, lease=timedelta(seconds=30)),
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert done.wait(10)
        assert wait_until(lambda: status_of(engine, job_id) == "COMPLETED")
    finally:
        worker.stop()
        thread.join(20)


@pytest.mark.parametrize("role", ROLES)
def test_no_role_can_change_or_delete_an_audit_row(
    as_role: RoleEngine, engine: Engine, role: str
) -> None:
    row = audit_row(engine)
    role_engine = as_role(role)
    assert refused(role_engine, f"UPDATE outbox_audit SET reason = 'rewritten' WHERE id = {row}")
    assert refused(role_engine, f"DELETE FROM outbox_audit WHERE id = {row}")


def test_the_operator_changes_jobs_and_writes_the_audit_in_one_transaction(
    as_role: RoleEngine, engine: Engine
) -> None:
    with engine.begin() as conn:
        job_id = gateway.enqueue(conn, "reservation.expired", {"seats": 1})
    operator = as_role("outbox_operator")
    with operator.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.job_id == job_id).values(status="CANCELLED"))
        queries.record_audit(
            conn, actor="ops", action="cancel", job_filter={"ids": [job_id]}, count=1,
            reason="customer asked",
        )  # fmt: skip
    assert status_of(engine, job_id) == "CANCELLED"
