"""The outbox table, defined once with SQLAlchemy 2; Alembic revisions are checked against it."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from outbox.states import FINISHED_STATES, JobStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

TIMESTAMP = sa.TIMESTAMP(timezone=True)


def _in_states(states: frozenset[JobStatus] | set[JobStatus]) -> sa.TextClause:
    listed = ", ".join(f"'{s.value}'" for s in sorted(states))
    return sa.text(f"status IN ({listed})")


jobs = sa.Table(
    "outbox_jobs",
    metadata,
    # Internal order of insertion; the relay publishes one key's jobs in this order.
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("job_id", sa.Text, nullable=False, unique=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("topic", sa.Text, nullable=True),
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("status", sa.Text, nullable=False, server_default=JobStatus.PENDING.value),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # NULL until the first claim, which fixes it from the worker's policy for the job's type.
    sa.Column("max_attempts", sa.Integer, nullable=True),
    # When the job is next due: the caller's run_at at first, the backoff's end after a failure.
    sa.Column("run_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("locked_by", sa.Text, nullable=True),
    sa.Column("locked_until", TIMESTAMP, nullable=True),
    # Fencing token: completing or failing needs the token of the current lease. Text in
    # Python: the worker only compares it and sends it back, and a uuid.UUID parsed in Python
    # for every claimed job was a sixth of what reading a claim's rows cost the claim loop.
    sa.Column("lease_token", pg.UUID(as_uuid=False), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_traceback", sa.Text, nullable=True),
    sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("progress", pg.JSONB, nullable=True),
    # Kafka: topic, partition, offset. Redis: stream, entry id.
    sa.Column("publish_receipt", pg.JSONB, nullable=True),
    # The inserting transaction's 64-bit id. The relay publishes only rows whose transaction
    # lies below every snapshot's horizon, so a late commit with a lower id is never skipped.
    sa.Column(
        "created_xid",
        sa.BigInteger,
        nullable=False,
        server_default=sa.text("(pg_current_xact_id()::text::bigint)"),
    ),
    sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("published_at", TIMESTAMP, nullable=True),
    sa.Column("started_at", TIMESTAMP, nullable=True),
    sa.Column("finished_at", TIMESTAMP, nullable=True),
    sa.CheckConstraint(sa.column("status").in_([s.value for s in JobStatus]), name="status_known"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    sa.CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    sa.CheckConstraint("priority >= 0", name="priority_not_negative"),
    sa.CheckConstraint("char_length(job_id) BETWEEN 1 AND 255", name="job_id_length"),
)

# Partial indexes on the live states keep the hot paths small however many finished rows exist.
sa.Index(
    "ix_outbox_jobs_claimable",
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    postgresql_where=_in_states({JobStatus.PENDING}),
)
sa.Index("ix_outbox_jobs_relayable", jobs.c.id, postgresql_where=_in_states({JobStatus.PENDING}))
sa.Index(
    "ix_outbox_jobs_published",
    jobs.c.type,
    jobs.c.run_at,
    postgresql_where=_in_states({JobStatus.PUBLISHED}),
)
sa.Index("ix_outbox_jobs_retry_due", jobs.c.run_at, postgresql_where=_in_states({JobStatus.FAILED}))
sa.Index(
    "ix_outbox_jobs_lease_expiry",
    jobs.c.locked_until,
    postgresql_where=_in_states({JobStatus.PROCESSING}),
)
sa.Index(
    "ix_outbox_jobs_finished", jobs.c.finished_at, postgresql_where=_in_states(FINISHED_STATES)
)
sa.Index("ix_outbox_jobs_key_id", jobs.c.key, jobs.c.id)

# What operators did to jobs, written in the same transaction as the change itself.
audit = sa.Table(
    "outbox_audit",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("actor", sa.Text, nullable=False),  # the gateway token's name, or the CLI user
    sa.Column("action", sa.Text, nullable=False),  # retry, cancel, purge, ...
    sa.Column("filter", pg.JSONB, nullable=False),  # which jobs: {"job_id": ...} or a filter
    sa.Column("count", sa.Integer, nullable=False),  # how many jobs the change moved
    sa.Column("reason", sa.Text, nullable=False),
    sa.CheckConstraint("count >= 0", name="count_not_negative"),
)
sa.Index("ix_outbox_audit_at", audit.c.at)
