"""The servers one suite run measures on: an embedded PostgreSQL, Redis and Kafka (tansu).

Every figure of a run comes from these same servers, so the ratios between rows hold on a
noisy shared machine. A broker that does not start leaves its rows "not run" rather than
stopping the suite; PostgreSQL is required.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from bench import databases
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis


@dataclass(frozen=True)
class Servers:
    """Where the run's servers listen; ``template`` is the outbox schema at head, to clone."""

    admin_url: str
    redis_url: str | None
    kafka_bootstrap: str | None
    template: str = databases.TEMPLATE


@contextlib.contextmanager
def started_servers(*, brokers: bool = True) -> Iterator[Servers]:
    """Start PostgreSQL (and the brokers), migrate the template database, stop them all after."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(embedded_postgres())
        redis_port = kafka_port = None
        if brokers:
            redis_port = optional_server(stack, embedded_redis)
            kafka_port = optional_server(stack, embedded_kafka)
        yield using_servers(
            pg.url,
            f"redis://127.0.0.1:{redis_port}/0" if redis_port else None,
            f"127.0.0.1:{kafka_port}" if kafka_port else None,
        )


def optional_server(
    stack: contextlib.ExitStack, start: Callable[[], contextlib.AbstractContextManager[Any]]
) -> int | None:
    """The port of an embedded broker, or None (its rows then say "not run") if it won't start."""
    try:
        return int(stack.enter_context(start()).port)
    except Exception as exc:
        Console(stderr=True).print(f"[yellow]{start.__name__} did not start:[/] {exc}")
        return None


def using_servers(admin_url: str, redis_url: str | None, kafka_bootstrap: str | None) -> Servers:
    """Servers someone else started (a test session's); migrates the bench's template on them."""
    databases.make_template(admin_url)
    return Servers(admin_url, redis_url, kafka_bootstrap)


def fresh_database(servers: Servers) -> contextlib.AbstractContextManager[str]:
    """A clone of the migrated template for one measurement; dropped afterwards."""
    return databases.fresh_database(servers.admin_url, servers.template)


def machine(admin_url: str) -> dict[str, object]:
    """What the figures were measured on: cores, CPU model, PostgreSQL version, and when."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        pg_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    engine.dispose()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg_version,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def warn(message: str) -> None:
    Console(stderr=True).print(f"[yellow]{message}[/]", highlight=False)
