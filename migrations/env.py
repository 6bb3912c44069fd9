"""Alembic environment: compares against ``outbox.schema.metadata`` and runs online only."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from outbox.schema import metadata

config = context.config
MIGRATION_LOCK_KEY = 0x6F7574626F78  # "outbox": one migration run at a time per database


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        raise RuntimeError("set OUTBOX_DATABASE_URL (or sqlalchemy.url) to run migrations")
    return url


def run_migrations_online() -> None:
    engine = sa.create_engine(_database_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            compare_type=True,
            # Serialise concurrent `outbox migrate` runs (two one-shot jobs started at once).
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
