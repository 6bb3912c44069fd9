"""``outbox dev``, the first command in the README: the whole pipeline, embedded, to the end."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

OUTBOX = str(Path(sys.executable).parent / "outbox")


def count_in_table(output: str, state: str) -> int:
    found = re.search(rf"{state}\s*│\s*([\d,]+)", output)
    assert found, f"no {state} row in:\n{output}"
    return int(found.group(1).replace(",", ""))


def test_dev_runs_every_demo_job_through_gateway_relay_and_worker_and_summarises() -> None:
    command = [OUTBOX, "dev", "--jobs", "300", "--rate", "2000", "--gateway-port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Redis Streams up at 127.0.0.1:" in result.stdout
    # 30 transactions of 10 jobs; every fifth went through the HTTP gateway.
    assert "submitted 300 jobs, 60 of them through the HTTP gateway" in result.stdout
    assert "finished 300 jobs in" in result.stdout
    completed, dead = (count_in_table(result.stdout, state) for state in ("COMPLETED", "DEAD"))
    assert completed + dead == 300
    assert completed > dead  # most succeed, some only after a retry
    assert re.search(r"[1-9]\d* needed more than one attempt", result.stdout)
    assert re.search(r"enqueue to completion: p50 \d+ ms, p99 \d+ ms", result.stdout)
    assert "jobs left by the rolled-back transaction: 0" in result.stdout
    assert "the embedded database was deleted" in result.stdout


def _ignore_sigint() -> None:
    # What a shell without job control does to a command it starts in the background (and so
    # to everything a CI job started that way runs): SIGINT ignored, inherited across exec.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop_signal", "inherited_sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-with-sigint-ignored-by-the-parent", "sigterm"],
)
def test_ctrl_c_stops_dev_cleanly_and_still_summarises(
    stop_signal: signal.Signals, inherited_sigint_ignored: bool
) -> None:
    command = [OUTBOX, "dev", "--jobs", "1000000", "--rate", "200", "--gateway-port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if inherited_sigint_ignored else None,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("worker started"):
                break
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "interrupted; stopping the gateway, relay and worker" in stdout
    assert "Traceback" not in stderr
    assert "the embedded database was deleted" in stdout
