"""Alembic environment and revisions for the outbox schema; ``outbox migrate`` applies them."""
