"""The stack a runbook runs against: its settings, and the ``outbox`` services it starts.

Every service is a real ``outbox`` process started from a shell command, as an operator (or a
container) starts it, with the scenario's settings in its environment. Each kind of service has a
port of its own, known in advance, so ``$RELAY_URL``, ``$WORKER_URL`` and ``$GATEWAY_URL`` point
at it even before it runs (a runbook may start the relay that was missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from outbox.embedded_servers import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HANDLERS = "tests.runbooks.handlers"
_PORT_SETTING = {"relay": "OUTBOX_PROBE_PORT", "worker": "OUTBOX_PROBE_PORT",
                 "gateway": "OUTBOX_GATEWAY_PORT"}  # fmt: skip
_URL_VARIABLE = {"relay": "RELAY_URL", "worker": "WORKER_URL", "gateway": "GATEWAY_URL"}


def libpq_url(database_url: str) -> str:
    """The ``postgresql://`` spelling of a SQLAlchemy URL: what both ``outbox`` and psql take."""
    url = sa.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@dataclass
class Service:
    kind: str
    command: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    """Settings and services of one scenario; ``workdir`` is the operator's current directory."""

    workdir: Path
    state: Path
    """Files the test and the handlers of ``tests.runbooks.handlers`` share."""
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, database_url: str, **settings: str) -> Stack:
        workdir, state = tmp_path / "operator", tmp_path / "state"
        workdir.mkdir()
        state.mkdir()
        ports = {kind: free_port() for kind in _URL_VARIABLE}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
        env = (
            inherited
            | {
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": str(ROOT),
                "COLUMNS": "200",
                "RUNBOOK_STATE": str(state),
                "HANDLERS_MODULE": HANDLERS,
                "OUTBOX_DATABASE_URL": libpq_url(database_url),
                "OUTBOX_BROKER": "none",
                "OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
                "OUTBOX_PROMOTE_INTERVAL_SECONDS": "0.2",
                "OUTBOX_RESCUE_INTERVAL_SECONDS": "0.5",
                "OUTBOX_LEASE_SECONDS": "2",
                "OUTBOX_WORKER_SHUTDOWN_GRACE_SECONDS": "1",
                "OUTBOX_PROBE_HOST": "127.0.0.1",
                "OUTBOX_GATEWAY_HOST": "127.0.0.1",
            }
            | {name: f"http://127.0.0.1:{ports[kind]}" for kind, name in _URL_VARIABLE.items()}
        )
        return cls(workdir, state, env | settings, ports)

    def start(self, command: str, *, kind: str, wait: bool = True, **env: str) -> Service:
        """Run ``command`` (a service) in the background; return once its /healthz answers
        (at once with ``wait=False``: then call :meth:`wait_up`, to start several together)."""
        busy = {s.port for s in self.running()}
        port = self.ports[kind] if self.ports[kind] not in busy else free_port()
        log_path = self.workdir.parent / f"{kind}-{len(self.services)}.log"
        environment = self.env | {_PORT_SETTING[kind]: str(port)} | env
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # exec: signals reach the outbox process itself
                ["bash", "-c", f"exec {command}"], cwd=self.workdir, env=environment,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        service = Service(kind, command, port, process, log_path)
        self.services.append(service)
        if wait:
            self.wait_up(service)
        return service

    def wait_up(self, service: Service) -> None:
        up = wait_until(lambda: _answers(service), timeout=40, every=0.1)
        assert up, f"{service.command!r} did not come up:\n{service.log()}"

    def running(self) -> list[Service]:
        return [s for s in self.services if s.process.poll() is None]

    def stop(self, service: Service, timeout: float = 20) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit code."""
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
        try:
            return service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
            raise AssertionError(f"{service.command!r} ignored SIGTERM:\n{service.log()}") from None

    def stop_all(self) -> dict[str, int]:
        """Stop every service still running; their exit codes by command (0: a clean stop)."""
        return {f"{s.kind}-{i}: {s.command}": self.stop(s) for i, s in enumerate(self.services)
                if s.process.poll() is None}  # fmt: skip

    def kill_all(self) -> None:
        """Teardown after a failure: nothing may outlive the test."""
        for service in self.running():
            service.process.kill()
            service.process.wait()


def _answers(service: Service) -> bool:
    if service.process.poll() is not None:
        raise AssertionError(f"{service.command!r} exited:\n{service.log()}")
    try:
        return httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
