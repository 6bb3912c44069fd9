"""One database per property module: Hypothesis runs many examples inside one test, so a
function-scoped database (one per test) would be shared by all of them anyway; each example
empties the table it uses instead."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outbox.database import create_engine, execute_autocommit
from tests.conftest import _with_database


@pytest.fixture(scope="module")
def property_engine(postgres_admin_url: str, template_database_url: str) -> Iterator[Engine]:
    name = f"props_{uuid.uuid4().hex[:8]}"
    template = sa.make_url(template_database_url).database
    execute_autocommit(postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {template}")
    engine = create_engine(_with_database(postgres_admin_url, name))
    yield engine
    engine.dispose()
    execute_autocommit(postgres_admin_url, f"DROP DATABASE {name} WITH (FORCE)")
