"""Create the outbox_jobs table with partial indexes on the live states.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "outbox_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=True),
        sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column(
            "run_at", sa.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("locked_by", sa.Text(), nullable=True),
        sa.Column("locked_until", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("lease_token", sa.UUID(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_traceback", sa.Text(), nullable=True),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("progress", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("publish_receipt", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_xid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("started_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("finished_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'PUBLISHED', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD', 'CANCELLED')",
            name=op.f("ck_outbox_jobs_status_known"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_jobs_attempts_not_negative")),
        sa.CheckConstraint(
            "char_length(job_id) BETWEEN 1 AND 255", name=op.f("ck_outbox_jobs_job_id_length")
        ),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_outbox_jobs_max_attempts_positive")),
        sa.CheckConstraint("priority >= 0", name=op.f("ck_outbox_jobs_priority_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_outbox_jobs_job_id")),
    )
    op.create_index(
        "ix_outbox_jobs_claimable",
        "outbox_jobs",
        [sa.literal_column("priority DESC"), "run_at", "id"],
        unique=False,
        postgresql_where=sa.text("status IN ('PENDING')"),
    )
    op.create_index(
        "ix_outbox_jobs_finished",
        "outbox_jobs",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('CANCELLED', 'COMPLETED', 'DEAD')"),
    )
    op.create_index("ix_outbox_jobs_key_id", "outbox_jobs", ["key", "id"], unique=False)
    op.create_index(
        "ix_outbox_jobs_lease_expiry",
        "outbox_jobs",
        ["locked_until"],
        unique=False,
        postgresql_where=sa.text("status IN ('PROCESSING')"),
    )
    op.create_index(
        "ix_outbox_jobs_relayable",
        "outbox_jobs",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status IN ('PENDING')"),
    )
    op.create_index(
        "ix_outbox_jobs_retry_due",
        "outbox_jobs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('FAILED')"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(
        "ix_outbox_jobs_retry_due",
        table_name="outbox_jobs",
        postgresql_where=sa.text("status IN ('FAILED')"),
    )
    op.drop_index(
        "ix_outbox_jobs_relayable",
        table_name="outbox_jobs",
        postgresql_where=sa.text("status IN ('PENDING')"),
    )
    op.drop_index(
        "ix_outbox_jobs_lease_expiry",
        table_name="outbox_jobs",
        postgresql_where=sa.text("status IN ('PROCESSING')"),
    )
    op.drop_index("ix_outbox_jobs_key_id", table_name="outbox_jobs")
    op.drop_index(
        "ix_outbox_jobs_finished",
        table_name="outbox_jobs",
        postgresql_where=sa.text("status IN ('CANCELLED', 'COMPLETED', 'DEAD')"),
    )
    op.drop_index(
        "ix_outbox_jobs_claimable",
        table_name="outbox_jobs",
        postgresql_where=sa.text("status IN ('PENDING')"),
    )
    op.drop_table("outbox_jobs")
