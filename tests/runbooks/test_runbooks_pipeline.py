"""Runbooks about the pipeline itself: relay lag, the broker, a long transaction, a schema
migration, gateway tokens; each run against a stack that shows its symptom.

Every block of the runbook runs (see :mod:`tests.runbooks.runbook_runner`); then the test asserts
the symptom is gone.
"""

from __future__ import annotations

import contextlib
import json
import re

import httpx
import psycopg
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from gateway import JobSpec
from gateway.auth import hash_token, new_token
from outbox import migrations_runner, queries
from outbox.embedded_servers import embedded_redis, free_port
from tests.operator_cli import audit_rows
from tests.runbooks.conftest import MakeStack, counts, database_now, enqueue, wait_for
from tests.runbooks.runbook_runner import Transcript, run_runbook
from tests.runbooks.runbook_stack import libpq_url
from tests.waiting import wait_until

WORKER = 'outbox worker --handlers "$HANDLERS_MODULE"'


def test_a_backlog_left_by_a_missing_relay_drains_once_relay_and_workers_run(
    database_url: str, engine: Engine, redis_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url, OUTBOX_BROKER="redis", OUTBOX_REDIS_URL=redis_url,
                       OUTBOX_REDIS_STREAM_PREFIX=f"{database_name(database_url)}:",
                       OUTBOX_WORKER_CONCURRENCY="2")  # fmt: skip
    stack.start(WORKER, kind="worker")
    backlog = enqueue(engine, [JobSpec("email.send", {"to": f"u{n}@example.com"})
                               for n in range(200)])  # fmt: skip

    run = run_runbook("backlog-growing.md", stack)

    assert "no relay answers" in run.output("Diagnose")
    assert "email.send" in run.output("Diagnose")
    wait_for(engine, backlog, "COMPLETED", timeout=60)
    assert len(stack.running()) == 3  # the worker, and the relay and worker the runbook started
    assert set(stack.stop_all().values()) == {0}


def test_the_relay_catches_up_after_a_broker_outage_and_lost_messages_are_sent_again(
    database_url: str, engine: Engine, make_stack: MakeStack
) -> None:
    port = free_port()
    with contextlib.ExitStack() as servers:
        broker = servers.enter_context(embedded_redis(port))
        stack = make_stack(database_url, OUTBOX_BROKER="redis",
                           OUTBOX_REDIS_URL=f"redis://127.0.0.1:{port}/0")  # fmt: skip
        relay = stack.start("outbox relay", kind="relay")
        published = enqueue(engine, [JobSpec("email.send", {"to": "a@example.com"})] * 4)
        wait_for(engine, published, "PUBLISHED")
        broker.stop()  # the broker goes away, and with it every entry (no persistence)
        waiting = enqueue(engine, [JobSpec("email.send", {"to": "b@example.com"})] * 4)
        assert wait_until(lambda: scraped(relay.url, "outbox_relay_published_total",
                                          outcome="failed") > 0, timeout=20)  # fmt: skip
        restored: list[str] = []

        def restart_broker() -> None:  # what the broker's own restart does
            servers.enter_context(embedded_redis(port))
            restored.append(database_now(engine))

        run = run_runbook("broker-unavailable.md", stack, stand_ins=[restart_broker],
                          values={"restored_at": lambda _: restored[0]})  # fmt: skip

        assert 'outcome="failed"' in run.output("Diagnose")
        wait_for(engine, published + waiting, "PUBLISHED")
        assert stream_job_ids(f"redis://127.0.0.1:{port}/0") >= set(published + waiting)
        [audit] = audit_rows(engine)
        assert (audit.action, audit.count >= 4) == ("retry", True)
        assert set(stack.stop_all().values()) == {0}


def test_ending_a_transaction_left_open_lets_the_relay_publish_what_it_held_back(
    database_url: str, engine: Engine, redis_url: str, make_stack: MakeStack
) -> None:
    stack = make_stack(database_url, OUTBOX_BROKER="redis", OUTBOX_REDIS_URL=redis_url,
                       OUTBOX_REDIS_STREAM_PREFIX=f"{database_name(database_url)}:")  # fmt: skip
    blocker = psycopg.connect(libpq_url(database_url), application_name="nightly-report")
    try:
        blocker.execute("SELECT pg_current_xact_id()")  # holds a transaction id, left open
        pid = str(blocker.info.backend_pid)
        held = enqueue(engine, [JobSpec("email.send", {"to": "c@example.com"})] * 5)
        relay = stack.start("outbox relay", kind="relay")
        # Until the relay's own gauge shows it, as the alert would (its first refresh is at once).
        assert wait_until(lambda: scraped(relay.url, "outbox_relay_horizon_delay_seconds") > 0,
                          timeout=15, every=0.2)  # fmt: skip
        assert set(counts(engine)) == {"PENDING"}

        run = run_runbook("long-transaction.md", stack, values={"pid": pid})

        assert not _answers(blocker)  # terminated: its transaction rolled back
    finally:
        blocker.close()
    assert "nightly-report" in run.output("Diagnose")
    assert pid in run.output("Diagnose")
    wait_for(engine, held, "PUBLISHED")
    assert relay_lag(engine) == queries.RelayLag(0.0, 0.0)
    assert set(stack.stop_all().values()) == {0}


def test_a_release_whose_schema_is_behind_becomes_ready_once_migrated(
    empty_database_url: str, make_stack: MakeStack
) -> None:
    migrations_runner.upgrade(empty_database_url, "0001")  # the previous release's schema
    stack = make_stack(empty_database_url)
    gateway = stack.start("outbox gateway", kind="gateway")  # the new release's pod
    assert httpx.get(f"{gateway.url}/readyz").status_code == 503

    run = run_runbook("schema-migration.md", stack, stand_ins=[None])

    assert "not at the migration head" in run.output("Diagnose")
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    head = migrations_runner.head_revisions()[0]
    assert f"database at revision {head}" in run.output("Mitigate")
    assert set(stack.stop_all().values()) == {0}


def test_a_gateway_token_is_replaced_without_a_gap_and_the_old_one_refused(
    database_url: str, make_stack: MakeStack
) -> None:
    old, oncall = new_token(), new_token()
    tokens = {
        "checkout": {"sha256": hash_token(old), "scopes": ["jobs:write", "jobs:read"]},
        "oncall": {"sha256": hash_token(oncall), "scopes": ["jobs:read", "jobs:admin"]},
    }
    stack = make_stack(database_url, OUTBOX_GATEWAY_TOKENS=json.dumps(tokens))
    gateways = [stack.start("outbox gateway", kind="gateway")]
    assert status_with(gateways[0].url, old) == 200

    def roll_out() -> None:  # what the Secret patch and `kubectl rollout restart` do
        assert stack.stop(gateways[-1]) == 0
        stack.env["OUTBOX_GATEWAY_TOKENS"] = (stack.workdir / "tokens.json").read_text()
        gateways.append(stack.start("outbox gateway", kind="gateway"))

    run = run_runbook("rotate-gateway-tokens.md", stack, stand_ins=[roll_out, roll_out], values={
        "name": "checkout",
        "new_token": lambda run: printed(run, "token"),
        "new_sha256": lambda run: printed(run, "sha256"),
    })  # fmt: skip

    new = printed(run, "token")
    assert "checkout" in run.output("Diagnose")
    codes = [line for line in run.output("Mitigate").splitlines() if re.fullmatch(r"\d{3}", line)]
    assert codes == ["200", "200"]  # the new token, after each rollout
    url = gateways[-1].url
    assert (status_with(url, old), status_with(url, new), status_with(url, oncall)) == (
        401, 200, 200)  # fmt: skip
    assert not (stack.workdir / "tokens.json").exists()
    assert set(stack.stop_all().values()) == {0}


def test_a_gateway_refusing_a_type_at_its_backlog_bound_accepts_it_once_a_worker_drains(
    database_url: str, engine: Engine, make_stack: MakeStack
) -> None:
    token = new_token()
    tokens = {"checkout": {"sha256": hash_token(token), "scopes": ["jobs:write", "jobs:read"]}}
    stack = make_stack(database_url, OUTBOX_GATEWAY_TOKENS=json.dumps(tokens),
                       OUTBOX_GATEWAY_BACKLOG_LIMITS=json.dumps({"email.send": 20}))  # fmt: skip
    gateway = stack.start("outbox gateway", kind="gateway")
    backlog = enqueue(engine, [JobSpec("email.send", {"to": f"u{n}@example.com"})
                               for n in range(20)])  # fmt: skip
    assert submit(gateway.url, token, "refused") == 503

    run = run_runbook("gateway-errors.md", stack)

    assert 'reason="backlog"' in run.output("Diagnose")
    assert re.search(r"email\.send \|\s+20$", run.output("Diagnose"), re.MULTILINE)  # by type
    assert "200" in run.output("Diagnose")  # /readyz: the database answers
    wait_for(engine, backlog, "COMPLETED", timeout=60)
    assert wait_until(lambda: submit(gateway.url, token, "accepted") == 201, timeout=10)
    assert set(stack.stop_all().values()) == {0}


def database_name(database_url: str) -> str:
    return str(sa.make_url(database_url).database)


def scraped(base: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0: none)."""
    text = httpx.get(f"{base}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())  # fmt: skip


def stream_job_ids(redis_url: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {fields["job_id"] for _, fields in client.xrange("outbox.jobs")}
    finally:
        client.close()


def relay_lag(engine: Engine) -> queries.RelayLag:
    with engine.connect() as conn:
        return queries.relay_lag(conn)


def _answers(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def status_with(base: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{base}/v1/jobs?limit=1", headers=headers).status_code


def submit(base: str, token: str, job_id: str) -> int:
    job = {"job_id": job_id, "type": "email.send", "payload": {"to": "new@example.com"}}
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{base}/v1/jobs", json=job, headers=headers).status_code


def printed(run: Transcript, field: str) -> str:
    """What ``outbox gateway hash-token --generate`` printed after ``field:``."""
    found = re.search(rf"^{field}:\s+(\S+)$", run.output("Mitigate"), re.MULTILINE)
    assert found, run.output("Mitigate")
    return found.group(1)
