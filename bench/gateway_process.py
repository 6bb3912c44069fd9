"""``outbox gateway`` as operators run it, in a subprocess, for the bench to measure.

One uvicorn worker on a free loopback port, a bearer token with the write scope and the rate
limit off: the bench measures the gateway, not its cap. The process's CPU time is read from
``/proc`` so the table can show the cores the gateway used beside the load generator's.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.closed_loop import BenchError
from gateway.auth import hash_token, new_token
from outbox.embedded_servers import free_port, wait_for_port


@dataclass(frozen=True)
class RunningGateway:
    url: str
    token: str
    pid: int


def outbox_command() -> str:
    beside = Path(sys.executable).parent / "outbox"
    return str(beside) if beside.exists() else shutil.which("outbox") or "outbox"


@contextlib.contextmanager
def running_gateway(database_url: str, *, max_batch: int) -> Iterator[RunningGateway]:
    """``outbox gateway`` on a free loopback port with one write token and no rate limit."""
    token, port = new_token(), free_port()
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_GATEWAY_HOST": "127.0.0.1",
        "OUTBOX_GATEWAY_PORT": str(port),
        "OUTBOX_GATEWAY_TOKENS": f'{{"bench": {{"sha256": "{hash_token(token)}", '
                                 f'"scopes": ["jobs:write"]}}}}',
        "OUTBOX_GATEWAY_RATE_LIMIT_PER_SECOND": "0",  # the bench measures the gateway, not a cap
        "OUTBOX_GATEWAY_MAX_BATCH": str(max(max_batch, 500)),
        "OUTBOX_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix="outbox-gateway-bench-")) / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([outbox_command(), "gateway"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(port, timeout=30, process=process)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        yield RunningGateway(url, token, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchError(f"the gateway exited with {process.returncode}; see {log_path}")
    shutil.rmtree(log_path.parent)  # kept only when something went wrong


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)  # /readyz is the only readiness signal the gateway gives
    raise BenchError(f"{url}/readyz did not answer 200 within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of another process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
