"""Fixtures of the gateway tests: an app on the test's own migrated database, tokens per scope."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gateway.app_context import GatewayConfig
from gateway.auth import TokenTable, hash_token
from gateway.http_app import create_app
from outbox.database import create_engine
from tests.conftest import TEMPLATE_DB

# name -> (secret, scopes); only the secrets' hashes reach the app, as in production.
TOKENS: dict[str, tuple[str, list[str]]] = {
    "writer": ("writer-secret-0123456789", ["jobs:write"]),
    "reader": ("reader-secret-0123456789", ["jobs:read"]),
    "admin": ("admin-secret-0123456789", ["jobs:admin"]),
    "ops": ("ops-secret-0123456789", ["jobs:write", "jobs:read", "jobs:admin"]),
}


def token_table() -> TokenTable:
    return TokenTable.from_hex({n: (hash_token(s), scopes) for n, (s, scopes) in TOKENS.items()})


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(engine: Engine) -> Iterator[MakeClient]:
    """Build a client on an app with config overrides, e.g. ``make_client(max_batch=3)``."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        config = GatewayConfig(tokens=token_table(), **overrides)
        client = TestClient(create_app(engine, config), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def module_engine(postgres_admin_url: str, template_database_url: str) -> Iterator[Engine]:
    """A migrated database shared by one module's tests (for tests that write nothing)."""
    name = f"outbox_gateway_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)  # fmt: skip
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    url = sa.make_url(postgres_admin_url).set(database=name)
    engine = create_engine(url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()
