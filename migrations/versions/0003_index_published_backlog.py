"""Index the PUBLISHED jobs by type and due time: the backlog counts stay off the finished rows.

The gateway's backlog bound and every worker's backlog gauge count the PENDING and PUBLISHED
jobs of some types. PENDING ones have partial indexes; PUBLISHED ones had none, so each count
read the whole table, finished rows included (1.1 s of a 10M-row table, every 2 s per worker).
Built CONCURRENTLY, so an outbox in use keeps taking jobs meanwhile. A build interrupted
part-way leaves an INVALID index of that name: ``DROP INDEX CONCURRENTLY ix_outbox_jobs_published``
and upgrade again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_outbox_jobs_published",
            "outbox_jobs",
            ["type", "run_at"],
            unique=False,
            postgresql_where=sa.text("status IN ('PUBLISHED')"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_outbox_jobs_published",
            table_name="outbox_jobs",
            postgresql_where=sa.text("status IN ('PUBLISHED')"),
            postgresql_concurrently=True,
        )
