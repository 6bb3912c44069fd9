"""The services under test as real processes, and the faults done to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUTBOX = str(Path(sys.executable).parent / "outbox")
ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "relay": [OUTBOX, "relay"],
    "worker": [OUTBOX, "worker", "--handlers", "tests.chaos.handlers"],
    "gateway": [OUTBOX, "gateway"],
}


@dataclass
class Services:
    """Starts ``outbox relay`` / ``outbox worker`` processes; kills and restarts them."""

    workdir: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    freezes: dict[str, int] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    _logs: int = 0

    def start(self, name: str, **extra_env: str) -> None:
        """Start ``name`` (``relay-1``, ``worker-2``: the kind is before the dash), with
        ``extra_env`` for this process only."""
        kind = name.split("-")[0]
        self._logs += 1
        with (self.workdir / f"{name}.{self._logs}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                COMMANDS[kind], cwd=ROOT, env=self.env | extra_env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL: no goodbye, the leases and the unmarked batch are all that is left."""
        process = self.running[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.frozen.discard(name)  # a stopped process dies of SIGKILL all the same
        self.kills[name.split("-")[0]] = self.kills.get(name.split("-")[0], 0) + 1
        self.start(name)

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process keeps its connections, locks and leases, and does nothing."""
        self.running[name].send_signal(signal.SIGSTOP)
        self.frozen.add(name)
        self.freezes[name.split("-")[0]] = self.freezes.get(name.split("-")[0], 0) + 1

    def thaw(self, name: str) -> None:
        """SIGCONT: it goes on from where it stopped, its leases possibly taken back meanwhile."""
        self.running[name].send_signal(signal.SIGCONT)
        self.frozen.discard(name)

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own (a crash the test did not cause), by name."""
        return {n: p.returncode for n, p in self.running.items() if p.poll() is not None}

    def stop_all(self) -> dict[str, int]:
        for name in list(self.frozen):
            self.thaw(name)  # a stopped process would not handle SIGTERM
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {name: process.wait(30) for name, process in self.running.items()}

    def kill_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_env(database_url: str, redis_url: str, prefix: str, workdir: Path) -> dict[str, str]:
    return os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "OUTBOX_BROKER": "redis",
        "OUTBOX_REDIS_URL": redis_url,
        "OUTBOX_REDIS_STREAM_PREFIX": prefix,
        "OUTBOX_DEFAULT_TOPIC": "orders",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.1",
        "OUTBOX_LEASE_SECONDS": "1",
        "OUTBOX_RESCUE_INTERVAL_SECONDS": "0.2",
        "OUTBOX_PROMOTE_INTERVAL_SECONDS": "0.2",
        "OUTBOX_WORKER_REDIS_MIN_IDLE_SECONDS": "0.5",
        "OUTBOX_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
        "OUTBOX_PROBE_HOST": "127.0.0.1",
        "OUTBOX_PROBE_PORT": "0",
        "CHAOS_DIR": str(workdir),
    }
