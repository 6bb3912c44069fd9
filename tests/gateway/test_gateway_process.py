"""``outbox gateway`` as operators run it: a real uvicorn process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.auth import hash_token
from tests.waiting import wait_until

OUTBOX = str(Path(sys.executable).parent / "outbox")
TOKEN = "process-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_gateway_process_accepts_an_authenticated_post_and_get(database_url: str) -> None:
    port = _free_port()
    tokens = f'{{"ci": {{"sha256": "{hash_token(TOKEN)}", "scopes": ["jobs:write", "jobs:read"]}}}}'
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_GATEWAY_HOST": "127.0.0.1",
        "OUTBOX_GATEWAY_PORT": str(port),
        "OUTBOX_GATEWAY_TOKENS": tokens,
    }
    process = subprocess.Popen([OUTBOX, "gateway"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: process.poll() is not None or _answers(f"{base}/readyz"), 20)
        assert process.poll() is None
        auth = {"Authorization": f"Bearer {TOKEN}"}
        job = {"type": "email.send", "payload": {"to": "a@example.com"}, "job_id": "p-1"}
        created = httpx.post(f"{base}/v1/jobs", json=job, headers=auth, timeout=10)
        shown = httpx.get(f"{base}/v1/jobs/p-1", headers=auth, timeout=10)
        anonymous = httpx.get(f"{base}/v1/jobs/p-1", timeout=10)
        assert created.status_code == 201
        assert (shown.status_code, shown.json()["status"]) == (200, "PENDING")
        assert anonymous.status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert TOKEN not in stderr  # the token is never logged


def test_bad_gateway_settings_print_one_line_and_exit_2(database_url: str) -> None:
    env = os.environ | {"OUTBOX_DATABASE_URL": database_url, "OUTBOX_GATEWAY_TOKENS": "{nope"}
    result = subprocess.run([OUTBOX, "gateway"], env=env, capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid settings: OUTBOX_GATEWAY_TOKENS: is not valid JSON"
    ]
