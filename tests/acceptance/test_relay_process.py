"""``outbox relay`` as operators run it: publishes, then stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox.schema import jobs

OUTBOX = str(Path(sys.executable).parent / "outbox")


@pytest.mark.redis
def test_relay_process_publishes_and_exits_zero_on_sigterm(
    engine: Engine, database_url: str, redis_url: str
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("t", {"i": i}) for i in range(25)])
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_BROKER": "redis",
        "OUTBOX_REDIS_URL": redis_url,
        "OUTBOX_REDIS_STREAM_PREFIX": prefix,
        "OUTBOX_DEFAULT_TOPIC": "jobs",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
    }
    process = subprocess.Popen([OUTBOX, "relay"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        published = 0
        while published < 25 and time.monotonic() < deadline and process.poll() is None:
            with engine.connect() as conn:
                published = conn.execute(
                    sa.select(sa.func.count()).where(jobs.c.status == "PUBLISHED")
                ).scalar_one()
            time.sleep(0.05)  # polling the table with a deadline
        assert published == 25
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(f"{prefix}jobs") == 25
    client.close()


def test_relay_refuses_broker_none_with_one_line(database_url: str) -> None:
    env = os.environ | {"OUTBOX_DATABASE_URL": database_url, "OUTBOX_BROKER": "none"}
    result = subprocess.run([OUTBOX, "relay"], env=env, capture_output=True, text=True, timeout=30,
                            check=False)  # fmt: skip
    assert result.returncode == 2
    assert "no relay is needed" in result.stderr
