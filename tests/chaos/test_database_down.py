"""The database unreachable under load (3 s short, 10 s full): it refuses new connections and
every session of the outbox database is terminated, as clients see a restart.

Pass: the gateway answers 503 while it is down and never 500; relay and worker reconnect on
their own; nothing lost: every committed business transaction's job and every job the gateway
acknowledged (201) completes, and a job refused with 503 is either absent or completed.

Not done here: stopping the PostgreSQL server itself (``pg_ctl stop -m immediate``) and
restarting it, which also runs crash recovery; the tests share one server, so that scenario runs
on a server of its own in ``test_database_crash.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa

from gateway.auth import hash_token, new_token
from outbox.database import execute_autocommit
from outbox.embedded_servers import free_port
from tests.chaos.checker import Report
from tests.chaos.conftest import FULL, Stage
from tests.chaos.load import run_transactions
from tests.waiting import wait_until

DOWN_SECONDS = 10.0 if FULL else 3.0
RATE = 50.0


class GatewayClient:
    """Submits one job every 50 ms until stopped; remembers each job's answer."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.answers: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            n = 0
            while not self.stop.wait(0.05):
                job_id = f"gw-{n}"
                job = {"job_id": job_id, "type": "chaos.order", "payload": {}, "key": "gw"}
                self.answers[job_id] = client.post("/v1/jobs", json=job).status_code
                n += 1


def test_a_database_outage_gets_503_from_the_gateway_and_loses_nothing(
    stage: Stage, postgres_admin_url: str, database_url: str,
    publish_report: Callable[[Report], Path],
) -> None:  # fmt: skip
    token, port = new_token(), free_port()
    tokens = {"chaos": {"sha256": hash_token(token), "scopes": ["jobs:write"]}}
    stage.set(OUTBOX_GATEWAY_TOKENS=json.dumps(tokens), OUTBOX_GATEWAY_PORT=str(port),
              OUTBOX_GATEWAY_HOST="127.0.0.1")  # fmt: skip
    for name in ("relay-1", "worker-1", "gateway-1"):
        stage.services.start(name)
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _answers(url), timeout=30), "the gateway did not come up"
    stage.warm_up()
    client = GatewayClient(url, token)
    posting = threading.Thread(target=client.run)
    load = threading.Thread(target=run_transactions,
                            args=(stage.engine, int((DOWN_SECONDS + 4) * RATE), stage.ledger),
                            kwargs={"rate": RATE})  # fmt: skip
    posting.start()
    load.start()
    name = str(sa.make_url(database_url).database)
    load.join(2.0)
    execute_autocommit(postgres_admin_url, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false",
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}'")  # fmt: skip
    try:
        load.join(DOWN_SECONDS)
        during = Counter(client.answers.values())
    finally:
        execute_autocommit(postgres_admin_url,
                            f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")  # fmt: skip
    back = time.monotonic()
    load.join()
    client.stop.set()
    posting.join()
    stage.engine.dispose()  # the pool's connections were terminated with the rest
    accepted = {j for j, status in client.answers.items() if status == 201}

    def finished() -> bool:
        return stage.unfinished() == 0 and _unfinished(stage, accepted) == 0

    drained = wait_until(finished, 60, every=0.1)
    report = stage.report("database-down", drain_seconds=time.monotonic() - back)
    publish_report(report)
    answers = Counter(client.answers.values())
    assert during[503] >= 1, f"no 503 while the database was down: {answers}"
    assert set(answers) <= {201, 503}, f"answers other than 201 and 503: {answers}"
    assert drained, report.summary()
    assert (report.lost, report.phantom, report.double_completions) == (0, 0, 0), report.summary()
    refused = [j for j, status in client.answers.items() if status == 503]
    assert _unfinished(stage, refused, absent_is_fine=True) == 0
    assert set(stage.services.stop_all().values()) == {0}


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _unfinished(
    stage: Stage, job_ids: set[str] | list[str], *, absent_is_fine: bool = False
) -> int:
    """Jobs not COMPLETED (absent ones count, unless ``absent_is_fine``)."""
    query = sa.text("SELECT job_id, status FROM outbox_jobs WHERE job_id = ANY(:ids)")
    with stage.engine.connect() as conn:
        found: dict[str, str] = {r[0]: r[1] for r in conn.execute(query, {"ids": list(job_ids)})}
    missing_allowed = {j for j in job_ids if absent_is_fine and j not in found}
    return len([j for j in job_ids if found.get(j) != "COMPLETED" and j not in missing_allowed])
