"""Real ``outbox worker`` processes on the table source, with settings that make faults quick:
a 2 s lease, rescues and promotions every 0.2 s, polls every 0.05 s.

The lease is the margin a live worker's heartbeat (every third of it) has against a stall of
the machine: with 1 s, a healthy job was claimed again from a live worker in 2 of about 56
runs of the poison test on a loaded 2-core machine (its heartbeat late by over 0.67 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

OUTBOX = str(Path(sys.executable).parent / "outbox")
ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.worker_faults.handlers"
LEASE_SECONDS = 2.0


TRANSITIONS = """
CREATE TABLE fault_transitions (
    seq bigserial PRIMARY KEY, job_id text NOT NULL, old_status text NOT NULL,
    new_status text NOT NULL, attempts int NOT NULL, worker_pid int,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION fault_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        -- locked_by is host:pid:random; the holder before a move out of PROCESSING, the
        -- claimer on a move into it.
        INSERT INTO fault_transitions (job_id, old_status, new_status, attempts, worker_pid)
        VALUES (NEW.job_id, OLD.status, NEW.status, NEW.attempts,
                split_part(coalesce(NEW.locked_by, OLD.locked_by), ':', 2)::int);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fault_transitions AFTER UPDATE ON outbox_jobs
    FOR EACH ROW EXECUTE FUNCTION fault_record_transition();
"""


@dataclass(frozen=True)
class Transition:
    """A status change of a job as PostgreSQL committed it, and the worker that made it."""

    job_id: str
    old: str
    new: str
    attempts: int
    worker_pid: int | None


def record_transitions(engine: Engine) -> None:
    """Install the trigger that writes every status change down (never part of the schema)."""
    with engine.begin() as conn:
        conn.execute(sa.text(TRANSITIONS))


def transitions(conn: sa.Connection) -> list[Transition]:
    query = sa.text("SELECT job_id, old_status, new_status, attempts, worker_pid "
                    "FROM fault_transitions ORDER BY seq")  # fmt: skip
    return [Transition(*row) for row in conn.execute(query)]


@dataclass
class Run:
    """One line of the handler-run record."""

    event: str
    job_id: str
    attempt: int
    pid: int


@dataclass
class Workers:
    """Starts ``outbox worker`` processes; each one's stderr goes to a file of its own."""

    workdir: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([OUTBOX, "worker", "--handlers", HANDLERS], cwd=ROOT,
                                       env=self.env | env, stderr=log)  # fmt: skip
        self.started.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return (self.workdir / f"worker-{self.started.index(process)}.log").read_text()

    def logs(self) -> list[str]:
        """The log of every worker started, in order."""
        return [self.log(process) for process in self.started]

    def runs(self) -> list[Run]:
        lines = (self.workdir / "runs.log").read_text().splitlines()
        return [Run(e, j, int(a), int(p)) for e, j, a, p in (line.split() for line in lines)]

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        process.send_signal(signal.SIGCONT)  # a stopped process would never see the SIGTERM
        process.send_signal(signal.SIGTERM)
        return process.wait(15)


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    (tmp_path / "runs.log").touch()
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_BROKER": "none",
        "OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS),
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.05",
        "OUTBOX_RESCUE_INTERVAL_SECONDS": "0.2",
        "OUTBOX_PROMOTE_INTERVAL_SECONDS": "0.2",
        "OUTBOX_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
        "OUTBOX_LOG_FORMAT": "json",
        "OUTBOX_PROBE_HOST": "127.0.0.1",
        "OUTBOX_PROBE_PORT": "0",  # several workers at once: each on a free port of its own
        "FAULTS_DIR": str(tmp_path),
    }
    started = Workers(tmp_path, env)
    try:
        yield started
    finally:
        for process in started.started:
            if process.poll() is None:
                process.kill()
            process.wait()
