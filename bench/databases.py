"""The bench's databases: one fresh database per run, on one embedded PostgreSQL.

A run that reused the previous run's database would inherit its dead rows, bloat and
statistics; a new database per run (``CREATE DATABASE``, cloned from a migrated template for the
outbox) starts every run alike, and is cheap next to the drains it hosts.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

import sqlalchemy as sa

from outbox import migrations_runner
from outbox.database import execute_autocommit
from outbox.embedded_servers import embedded_postgres

TEMPLATE = "outbox_bench_template"
_database_numbers = itertools.count()


def database_url(admin_url: str, name: str) -> str:
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def make_template(admin_url: str) -> None:
    """The outbox schema at head, migrated once; each outbox run clones it."""
    drop, create = f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}"
    execute_autocommit(admin_url, drop, create)
    migrations_runner.upgrade(database_url(admin_url, TEMPLATE))


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database (a clone of ``template``, or empty) for one run; dropped afterwards."""
    name = f"bench_{os.getpid()}_{next(_database_numbers)}"
    clone = f" TEMPLATE {template}" if template else ""
    execute_autocommit(admin_url, f"CREATE DATABASE {name}{clone}")
    try:
        yield database_url(admin_url, name)
    finally:
        execute_autocommit(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def embedded_outbox_database() -> Iterator[str]:
    """A migrated outbox database on an embedded PostgreSQL of its own: a standalone bench's."""
    with embedded_postgres() as pg:
        make_template(pg.url)
        with fresh_database(pg.url, TEMPLATE) as url:
            yield url


def settle(url: str) -> None:
    """Planner statistics and a checkpoint, so no run starts with the previous one's debt."""
    execute_autocommit(url, "ANALYZE", "CHECKPOINT")
