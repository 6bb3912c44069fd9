"""Applying and inspecting the Alembic migrations, which live in the ``migrations`` folder.

Migrations are an explicit step (``outbox migrate``), never run at service start.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url``, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may hold percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes everything)."""
    command.downgrade(alembic_config(database_url), revision)


def head_revisions(database_url: str = "postgresql+psycopg://") -> tuple[str, ...]:
    """The head revision(s) of the migration scripts; one, unless someone forgot to merge."""
    return tuple(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; empty before the first migration."""
    return tuple(MigrationContext.configure(conn).get_current_heads())


def is_at_head(conn: Connection) -> bool:
    """Whether the database schema matches the newest migration."""
    return set(current_revisions(conn)) == set(head_revisions())


def serves_this_code(conn: Connection) -> bool:
    """Whether this code may run on the database: at our newest migration, or at a newer one.

    Migrations expand, then contract a release later, so the code still running during a
    rollout works on a schema one migration ahead; a revision our scripts do not know is a
    newer release's. A database behind our head (or empty) lacks what this code needs.
    """
    current = set(current_revisions(conn))
    if not current:
        return False
    return current == set(head_revisions()) or not current <= _known_revisions()


@functools.cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://"))
    return frozenset(revision.revision for revision in script.walk_revisions())
