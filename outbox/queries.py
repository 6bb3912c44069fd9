"""Every statement that reads or moves job rows: a table of contents of what can happen to a job.

Rules every function here keeps:
- a transition is one statement whose WHERE clause guards the expected states (from
  :mod:`outbox.states`) and, where a lease applies, the lease token, so two actors never both win;
- time comes from ``now``, which defaults to the database clock (tests pass it to move time);
- nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import functools
import json
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Connection

from outbox.job_record import BacklogStats, ClaimedJob, JobRecord, Lease
from outbox.new_job import NewJob
from outbox.schema import TIMESTAMP, audit, jobs
from outbox.states import FINISHED_STATES, JobStatus, sources_of

S = JobStatus
NOTIFY_CHANNEL = "outbox_jobs"
"""LISTEN/NOTIFY channel that wakes the relay and the table-source worker; payloads are tiny."""

_CLAIMED_COLUMNS = (  # in the order of ClaimedJob's fields: a row builds one positionally
    jobs.c.id,
    jobs.c.job_id,
    jobs.c.type,
    sa.cast(jobs.c.payload, sa.Text).label("payload_json"),  # decoded by the handler's thread
    jobs.c.key,
    jobs.c.topic,
    jobs.c.attempts,
    jobs.c.max_attempts,
    sa.cast(jobs.c.headers, sa.Text).label("headers_json"),
    # As text from the server: psycopg would parse a uuid.UUID in Python, for each job.
    sa.cast(jobs.c.lease_token, sa.Text).label("lease_token"),
    # One timestamp, not three: psycopg builds each in Python's datetime, per job.
    sa.func.coalesce(jobs.c.published_at, jobs.c.created_at).label("since"),
)


def _now(now: datetime | None) -> sa.ColumnElement[datetime]:
    return sa.func.coalesce(sa.literal(now, TIMESTAMP), sa.func.now())


def _bound_now(name: str) -> sa.ColumnElement[datetime]:
    """:func:`_now` for a statement built once: ``now`` bound at execution as ``name``."""
    return sa.func.coalesce(sa.bindparam(name, type_=TIMESTAMP), sa.func.now())


def _in(states: Iterable[JobStatus]) -> sa.ColumnElement[bool]:
    return jobs.c.status.in_(sorted(s.value for s in states))


def _ids_array(values: Sequence[int]) -> sa.BindParameter[list[int]]:
    return sa.literal(list(values), pg.ARRAY(sa.BigInteger))


def _text_array(values: Sequence[str | None]) -> sa.BindParameter[list[str | None]]:
    return sa.literal(list(values), pg.ARRAY(sa.Text))


def _picked_ids(select_ids: sa.Select[tuple[int]]) -> sa.ColumnElement[bool]:
    # `id = ANY(ARRAY(subquery))` pins an InitPlan plus primary-key lookups; `id IN (subquery)`
    # was planned as a scan of the whole table (DESIGN.md, performance notes).
    return jobs.c.id == sa.any_(sa.func.array(select_ids.scalar_subquery()))


def _effective_max_attempts(
    default: int, by_type: Mapping[str, int] | None
) -> sa.ColumnElement[int]:
    per_type = sa.cast(sa.literal(json.dumps(dict(by_type or {}))), pg.JSONB)
    return sa.func.coalesce(
        jobs.c.max_attempts, sa.cast(per_type.op("->>")(jobs.c.type), sa.Integer), default
    )


# --- enqueue -------------------------------------------------------------------------------------


def insert_jobs(conn: Connection, new_jobs: Sequence[NewJob], *, notify: bool = True) -> list[str]:
    """Insert jobs in one round trip; return the ``job_id`` of each row actually inserted.

    A ``job_id`` that already exists is left alone (``ON CONFLICT DO NOTHING``); compare its
    content with :func:`find_conflicting_jobs`. With ``notify``, one NOTIFY wakes listeners
    when the transaction commits (PostgreSQL folds repeats within a transaction).
    """
    if not new_jobs:
        return []
    if len(new_jobs) == 1:  # the common enqueue: plain values, no JSON rows to build
        [one] = new_jobs
        values: dict[str, Any] = {
            "job_id": one.job_id, "type": one.type, "payload": one.payload_json, "key": one.key,
            "topic": one.topic, "priority": one.priority, "run_at": one.run_at,
            "max_attempts": one.max_attempts, "headers": one.headers_json,
            "channel": NOTIFY_CHANNEL,
        }  # fmt: skip
        # The hot enqueue: straight to the driver (SQLAlchemy's events still fire), and the row
        # count instead of RETURNING. Each saves about 50 µs of the caller's transaction.
        result = conn.exec_driver_sql(_INSERT_ONE_NOTIFY if notify else _INSERT_ONE, values)
        return [one.job_id] if result.rowcount == 1 else []
    scalars, bodies = _rows_json(new_jobs)
    params = {"scalars": scalars, "bodies": bodies, "channel": NOTIFY_CHANNEL}
    statement = _INSERT_NOTIFY if notify else _INSERT
    # All rows at once: iterating the result fetches them one by one, a call each.
    return list(conn.execute(statement, params).scalars().all())


_JSON = json.JSONEncoder(separators=(",", ":"))


def _rows_json(new_jobs: Sequence[NewJob]) -> tuple[str, str]:
    """The jobs as two JSON arrays, one element per job: its plain columns, and its payload and
    headers (JSON already, so joined as they are).

    One text parameter each that PostgreSQL parses, rather than nine arrays psycopg quotes
    element by element; the plain columns of all jobs in one call of the C encoder, rather than
    a call per value.
    """
    scalars = _JSON.encode(
        [
            (j.job_id, j.type, j.key, j.topic, j.priority,
             None if j.run_at is None else j.run_at.isoformat(), j.max_attempts)
            for j in new_jobs
        ]
    )  # fmt: skip
    bodies = "[" + ",".join([f"[{j.payload_json},{j.headers_json}]" for j in new_jobs]) + "]"
    return scalars, bodies


# Element n of each array is job n; ROWS FROM pairs them up in order.
_INSERT_SQL = """
INSERT INTO outbox_jobs (job_id, type, payload, key, topic, priority, run_at, max_attempts, headers)
SELECT s->>0, s->>1, b->0, s->>2, s->>3, CAST(s->>4 AS smallint),
       coalesce(CAST(s->>5 AS timestamptz), now()), CAST(s->>6 AS int), b->1
FROM ROWS FROM (jsonb_array_elements(CAST(:scalars AS jsonb)),
                jsonb_array_elements(CAST(:bodies AS jsonb)))
     WITH ORDINALITY AS r(s, b, n)
ORDER BY r.n
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""
# In the driver's own parameter style (psycopg and psycopg2 both take it): it skips SQLAlchemy.
_INSERT_ONE_SQL = """
INSERT INTO outbox_jobs (job_id, type, payload, key, topic, priority, run_at, max_attempts, headers)
SELECT %(job_id)s, %(type)s, CAST(%(payload)s AS jsonb), %(key)s, %(topic)s,
       CAST(%(priority)s AS smallint), coalesce(CAST(%(run_at)s AS timestamptz), now()),
       CAST(%(max_attempts)s AS int), CAST(%(headers)s AS jsonb)
{wake}
ON CONFLICT (job_id) DO NOTHING
"""
_INSERT_ONE = _INSERT_ONE_SQL.format(wake="")
# The NOTIFY as the row's one-row source: it is sent when the transaction commits.
_INSERT_ONE_NOTIFY = _INSERT_ONE_SQL.format(
    wake="FROM (SELECT pg_notify(%(channel)s, 'pending')) AS wake"
)


def _notifying(insert_sql: str) -> sa.TextClause:
    """The insert, and one NOTIFY that wakes listeners when its transaction commits."""
    return sa.text(
        f"WITH inserted AS ({insert_sql}), wake AS (SELECT pg_notify(:channel, 'pending'))"
        " SELECT inserted.job_id FROM inserted, wake"
    )


_INSERT, _INSERT_NOTIFY = sa.text(_INSERT_SQL), _notifying(_INSERT_SQL)


def find_conflicting_jobs(conn: Connection, new_jobs: Sequence[NewJob]) -> list[str]:
    """The ``job_id`` of each job that exists with other type, payload, key or topic."""
    if not new_jobs:
        return []
    params = {
        "job_ids": [j.job_id for j in new_jobs],
        "types": [j.type for j in new_jobs],
        "payloads": [j.payload_json for j in new_jobs],
        "keys": [j.key for j in new_jobs],
        "topics": [j.topic for j in new_jobs],
    }
    return [row[0] for row in conn.execute(_CONFLICTS, params)]


_CONFLICTS = sa.text("""
SELECT e.job_id
FROM outbox_jobs AS e
JOIN unnest(CAST(:job_ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS text[]),
            CAST(:keys AS text[]), CAST(:topics AS text[])) AS n(job_id, type, payload, key, topic)
  ON e.job_id = n.job_id
WHERE e.type <> n.type OR e.payload <> n.payload::jsonb OR e.key <> n.key
   OR e.topic IS DISTINCT FROM n.topic
ORDER BY e.id
""")


# --- worker: claim, finish, fail ---------------------------------------------------------------


def claim_batch(
    conn: Connection,
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    default_max_attempts: int,
    max_attempts_by_type: Mapping[str, int] | None = None,
    types: Sequence[str] | None = None,
    exclude_types: Sequence[str] = (),
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Claim up to ``limit`` due PENDING jobs: highest priority, then earliest due, then oldest.

    Locked rows are skipped (``SKIP LOCKED``), so concurrent workers never wait for each other.
    The attempt is counted here, and ``max_attempts`` is fixed from the policy if the job had none.
    ``types`` keeps only those types; ``exclude_types`` leaves those out (a worker claims the
    types at their concurrency or rate limit separately, with a smaller limit).
    """
    statement = _claim_statement(
        worker_id, lease, default_max_attempts, _policy_key(max_attempts_by_type),
        None if types is None else tuple(types), tuple(exclude_types),
    )  # fmt: skip
    return _claimed(conn, statement, {"claim_limit": limit, "claim_now": now})


def _policy_key(max_attempts_by_type: Mapping[str, int] | None) -> tuple[tuple[str, int], ...]:
    """The per-type policy as part of a cached statement's key (hashable, order-free)."""
    return tuple(sorted((max_attempts_by_type or {}).items()))


def _claimed(
    conn: Connection, statement: sa.Update, parameters: dict[str, Any]
) -> list[ClaimedJob]:
    claimed = list(map(ClaimedJob._make, conn.execute(statement, parameters).all()))
    claimed.sort(key=_by_id)
    return claimed


@functools.lru_cache(maxsize=256)
def _claim_statement(
    worker_id: str,
    lease: timedelta,
    default_max_attempts: int,
    max_attempts_by_type: tuple[tuple[str, int], ...],
    types: tuple[str, ...] | None,
    exclude_types: tuple[str, ...],
) -> sa.Update:
    # Built once per worker and claim group, with the limit and the time bound at execution:
    # building and keying the expression took more of the claim loop's time than the database.
    t = _bound_now("claim_now")
    due = sa.select(jobs.c.id).where(jobs.c.status == S.PENDING, jobs.c.run_at <= t)
    if types is not None:
        due = due.where(jobs.c.type.in_(list(types)))
    if exclude_types:
        due = due.where(jobs.c.type.not_in(list(exclude_types)))
    picked = (
        due.order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
        .limit(sa.bindparam("claim_limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )
    by_type = dict(max_attempts_by_type)
    return (
        sa.update(jobs)
        .where(_picked_ids(picked), jobs.c.status == S.PENDING)
        .values(_lease_values(worker_id, lease, t, default_max_attempts, by_type))
        .returning(*_CLAIMED_COLUMNS)
    )


def claim_by_job_ids(
    conn: Connection,
    *,
    job_ids: Sequence[str],
    worker_id: str,
    lease: timedelta,
    default_max_attempts: int,
    max_attempts_by_type: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Claim jobs a broker delivered. A duplicate delivery finds nothing to claim.

    PENDING counts as claimable too: a delivery can overtake the relay's mark of PUBLISHED.
    """
    if not job_ids:
        return []
    statement = _claim_by_ids_statement(
        worker_id, lease, default_max_attempts, _policy_key(max_attempts_by_type)
    )
    return _claimed(conn, statement, {"claim_job_ids": list(job_ids), "claim_now": now})


@functools.lru_cache(maxsize=64)
def _claim_by_ids_statement(
    worker_id: str,
    lease: timedelta,
    default_max_attempts: int,
    max_attempts_by_type: tuple[tuple[str, int], ...],
) -> sa.Update:
    t = _bound_now("claim_now")
    claimable = sa.or_(
        jobs.c.status == S.PUBLISHED, sa.and_(jobs.c.status == S.PENDING, jobs.c.run_at <= t)
    )
    delivered = sa.bindparam("claim_job_ids", type_=pg.ARRAY(sa.Text))
    by_type = dict(max_attempts_by_type)
    return (
        sa.update(jobs)
        .where(jobs.c.job_id == sa.any_(delivered), claimable)
        .values(_lease_values(worker_id, lease, t, default_max_attempts, by_type))
        .returning(*_CLAIMED_COLUMNS)
    )


def _lease_values(
    worker_id: str,
    lease: timedelta,
    t: sa.ColumnElement[datetime],
    default_max_attempts: int,
    max_attempts_by_type: Mapping[str, int] | None,
) -> dict[str, Any]:
    return {
        "status": S.PROCESSING.value,
        "attempts": jobs.c.attempts + 1,
        "max_attempts": _effective_max_attempts(default_max_attempts, max_attempts_by_type),
        "locked_by": worker_id,
        "locked_until": t + sa.literal(lease, sa.Interval),
        "lease_token": sa.func.gen_random_uuid(),
        "started_at": t,
        "updated_at": t,
    }


def _holds_lease(lease: Lease) -> sa.ColumnElement[bool]:
    return sa.and_(
        jobs.c.id == lease.id,
        jobs.c.status == S.PROCESSING,
        jobs.c.lease_token == sa.literal(lease.lease_token, pg.UUID(as_uuid=False)),
    )


_RELEASED_LEASE: dict[str, Any] = {"locked_by": None, "locked_until": None, "lease_token": None}


class Completion(NamedTuple):
    """A finished handler run: the lease it ran under and its optional JSON result.

    A named tuple: the outcome writer makes one per job.
    """

    lease: Lease
    result_json: str | None = None


def mark_completed(
    conn: Connection, completions: Sequence[Completion], *, now: datetime | None = None
) -> list[int]:
    """PROCESSING -> COMPLETED for each job whose lease token still matches; return their ids.

    A zombie (its lease was rescued and maybe claimed again) has an old token: nothing changes.
    """
    if not completions:
        return []
    # One JSON document, [[id, token, result JSON text or null], ...], built by one call of
    # the C encoder (as a batch insert's): psycopg adapted Python lists element by element in
    # Python, a quarter of the outcome writer's time per job (README, "Benchmarks").
    done = [[c.lease.id, c.lease.lease_token, c.result_json] for c in completions]
    parameters = {"done": json.dumps(done), "done_now": now}
    # All rows at once: iterating the result fetches them one by one, a call each.
    return sorted(conn.execute(_complete_statement(), parameters).scalars().all())


@functools.cache
def _complete_statement() -> sa.Update:
    # Built once, the document bound at execution (as the claim's): per batch, only values move.
    element = (
        sa.func.jsonb_array_elements(sa.cast(sa.bindparam("done", type_=sa.Text), pg.JSONB))
        .table_valued("value", name="element")
        .c.value
    )
    done = sa.select(
        sa.cast(element.op("->>")(0), sa.BigInteger).label("id"),
        sa.cast(element.op("->>")(1), pg.UUID).label("lease_token"),
        element.op("->>")(2).label("result"),
    ).subquery("done")
    t = _bound_now("done_now")
    return (
        sa.update(jobs)
        .where(_holds_leases(done))
        .values(
            status=S.COMPLETED.value,
            result=sa.cast(done.c.result, pg.JSONB),
            finished_at=t,
            updated_at=t,
            **_RELEASED_LEASE,
        )
        .returning(jobs.c.id)
    )


def schedule_retry(
    conn: Connection,
    lease: Lease,
    *,
    retry_in: timedelta,
    error: str,
    traceback: str | None = None,
    now: datetime | None = None,
) -> bool:
    """PROCESSING -> FAILED, due again after ``retry_in``, if attempts remain and the lease holds.

    Returns False when nothing changed: the lease was lost, or no attempts remain (then call
    :func:`dead_letter`).
    """
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_lease(lease), jobs.c.attempts < jobs.c.max_attempts)
        .values(
            status=S.FAILED.value,
            run_at=t + sa.literal(retry_in, sa.Interval),
            last_error=error,
            last_traceback=traceback,
            updated_at=t,
            **_RELEASED_LEASE,
        )
    )
    return conn.execute(statement).rowcount == 1


def dead_letter(
    conn: Connection,
    lease: Lease,
    *,
    error: str,
    traceback: str | None = None,
    now: datetime | None = None,
) -> bool:
    """PROCESSING -> DEAD (attempts used up, or a permanent error) if the lease still holds."""
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_lease(lease))
        .values(
            status=S.DEAD.value,
            last_error=error,
            last_traceback=traceback,
            finished_at=t,
            updated_at=t,
            **_RELEASED_LEASE,
        )
    )
    return conn.execute(statement).rowcount == 1


def _leases_table(leases: Sequence[Lease], name: str) -> sa.TableValuedAlias:
    return (
        sa.func.unnest(
            _ids_array([le.id for le in leases]),
            sa.literal([le.lease_token for le in leases], pg.ARRAY(pg.UUID(as_uuid=False))),
        )
        .table_valued("id", "lease_token", name=name)
        .render_derived()
    )


def _holds_leases(given: sa.FromClause) -> sa.ColumnElement[bool]:
    """The many-rows form of :func:`_holds_lease`: rows whose (id, token) is in ``given``."""
    return sa.and_(
        jobs.c.id == given.c.id,
        jobs.c.lease_token == given.c.lease_token,
        jobs.c.status == S.PROCESSING,
    )


def _attempt_given_back(
    t: sa.ColumnElement[datetime], run_at: sa.ColumnElement[datetime]
) -> dict[str, Any]:
    """PROCESSING -> PENDING without counting the attempt: a snooze or a lease handed back."""
    return {
        "status": S.PENDING.value,
        "attempts": jobs.c.attempts - 1,
        "run_at": run_at,
        "updated_at": t,
        **_RELEASED_LEASE,
    }


def extend_leases(
    conn: Connection, leases: Sequence[Lease], *, lease: timedelta, now: datetime | None = None
) -> list[int]:
    """Heartbeat: push ``locked_until`` to ``now + lease`` for each lease still held; their ids.

    A job missing from the answer was rescued (and maybe claimed again): its handler should stop.
    """
    if not leases:
        return []
    held = _leases_table(leases, "held")
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_leases(held))
        .values(locked_until=t + sa.literal(lease, sa.Interval), updated_at=t)
        .returning(jobs.c.id)
    )
    return sorted(row[0] for row in conn.execute(statement))


def report_progress(
    conn: Connection, lease: Lease, progress_json: str, *, now: datetime | None = None
) -> bool:
    """Store a running job's ``progress`` (JSON text) if the lease still holds."""
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_lease(lease))
        .values(progress=sa.cast(sa.literal(progress_json, sa.Text), pg.JSONB), updated_at=t)
    )
    return conn.execute(statement).rowcount == 1


def snooze(
    conn: Connection, lease: Lease, *, run_in: timedelta, now: datetime | None = None
) -> bool:
    """PROCESSING -> PENDING, due after ``run_in``, the attempt given back (not a failure).

    For a handler that asked to run later, and for a job over its rate limit.
    """
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_lease(lease))
        .values(_attempt_given_back(t, t + sa.literal(run_in, sa.Interval)))
    )
    return conn.execute(statement).rowcount == 1


def release_leases(
    conn: Connection, leases: Sequence[Lease], *, now: datetime | None = None
) -> list[int]:
    """PROCESSING -> PENDING, due now, the attempt given back; returns the ids still held.

    A worker shutting down hands back the jobs it could not finish within its grace period.
    """
    if not leases:
        return []
    given = _leases_table(leases, "given")
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(_holds_leases(given))
        .values(_attempt_given_back(t, t))
        .returning(jobs.c.id)
    )
    return sorted(row[0] for row in conn.execute(statement))


# --- relay ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayRow:
    """A committed, due PENDING job as the relay publishes it."""

    id: int
    job_id: str
    type: str
    key: str
    topic: str | None
    payload_json: str
    attempts: int
    headers: dict[str, str]
    due_at: datetime
    """When the job became publishable: its commit (approximated by the insert) or ``run_at``."""


def shard_of_key(shard_count: int) -> sa.ColumnElement[int]:
    """The relay shard of a row: a hash of its key, so one key's jobs stay in one shard."""
    # hashtext is stable across servers and versions of the same major; masking the sign
    # bit keeps the remainder non-negative.
    return sa.func.mod(sa.func.hashtext(jobs.c.key).op("&")(0x7FFF_FFFF), shard_count)


def _visibility_horizon() -> sa.ColumnElement[int]:
    # Every transaction below this id has finished; a row inserted by one at or above it may
    # still be joined by an earlier row that commits later, so it waits.
    return sa.cast(
        sa.cast(sa.func.pg_snapshot_xmin(sa.func.pg_current_snapshot()), sa.Text), sa.BigInteger
    )


def fetch_relayable(
    conn: Connection,
    *,
    limit: int,
    shards: tuple[int, Sequence[int]] | None = None,
    now: datetime | None = None,
) -> list[RelayRow]:
    """Lock up to ``limit`` due PENDING jobs below the visibility horizon, in ``id`` order.

    A long-running writer holds publication back (it never reorders or skips it). Rows another
    relay has locked are skipped. The locks last until the caller's transaction ends, so the
    caller publishes, marks, and commits inside it. ``shards`` = (shard count, the shards this
    relay owns) limits the batch to those shards; None takes every shard.
    """
    t = _now(now)
    statement = (
        sa.select(
            jobs.c.id,
            jobs.c.job_id,
            jobs.c.type,
            jobs.c.key,
            jobs.c.topic,
            sa.cast(jobs.c.payload, sa.Text).label("payload_json"),
            jobs.c.attempts,
            jobs.c.headers,
            sa.func.greatest(jobs.c.created_at, jobs.c.run_at).label("due_at"),
        )
        .where(
            jobs.c.status == S.PENDING,
            jobs.c.run_at <= t,
            jobs.c.created_xid < _visibility_horizon(),
        )
        .order_by(jobs.c.id)
        .limit(limit)
        .with_for_update(of=jobs, skip_locked=True)
    )
    if shards is not None:
        shard_count, owned = shards
        statement = statement.where(shard_of_key(shard_count) == sa.any_(_ids_array(owned)))
    return [RelayRow(**row) for row in conn.execute(statement).mappings()]


@dataclass(frozen=True)
class RelayLag:
    """How far the relay is behind: the oldest due PENDING job, and the one held by the horizon."""

    oldest_pending_age_seconds: float
    horizon_delay_seconds: float


def relay_lag(conn: Connection, *, now: datetime | None = None) -> RelayLag:
    """Both relay gauges in one scan of the due PENDING rows (0 when there are none)."""
    t = _now(now)
    age = sa.func.extract("epoch", t - sa.func.min(jobs.c.run_at))
    held = sa.func.extract(
        "epoch", t - sa.func.min(jobs.c.run_at).filter(jobs.c.created_xid >= _visibility_horizon())
    )
    statement = sa.select(sa.func.coalesce(age, 0), sa.func.coalesce(held, 0)).where(
        jobs.c.status == S.PENDING, jobs.c.run_at <= t
    )
    oldest, delay = conn.execute(statement).one()
    return RelayLag(float(oldest), float(delay))


def horizon_delay_seconds(conn: Connection, *, now: datetime | None = None) -> float:
    """How long the oldest due PENDING job held back by an open transaction has waited (0: none)."""
    return relay_lag(conn, now=now).horizon_delay_seconds


@dataclass(frozen=True)
class PublishReceipt:
    """Where the broker put a job's message (Kafka: topic, partition, offset; Redis: stream, id)."""

    id: int
    receipt: Mapping[str, Any] = field(default_factory=dict)


def mark_published(
    conn: Connection, receipts: Sequence[PublishReceipt], *, now: datetime | None = None
) -> list[int]:
    """PENDING -> PUBLISHED with the broker's receipt; call only after the broker acknowledged.

    Rows no longer PENDING (a fast worker already claimed one) are left as they are.
    """
    if not receipts:
        return []
    acked = (
        sa.func.unnest(
            _ids_array([r.id for r in receipts]),
            _text_array([json.dumps(dict(r.receipt)) for r in receipts]),
        )
        .table_valued("id", "receipt", name="acked")
        .render_derived()
    )
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(jobs.c.id == acked.c.id, jobs.c.status == S.PENDING)
        .values(
            status=S.PUBLISHED.value,
            publish_receipt=sa.cast(acked.c.receipt, pg.JSONB),
            published_at=t,
            updated_at=t,
        )
        .returning(jobs.c.id)
    )
    return sorted(row[0] for row in conn.execute(statement))


# --- periodic duties -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RescuedJob:
    """A job whose lease expired: back to PENDING for another attempt, or DEAD if none remain."""

    id: int
    job_id: str
    status: JobStatus


def rescue_expired(
    conn: Connection, *, limit: int = 1000, now: datetime | None = None
) -> list[RescuedJob]:
    """PROCESSING with an expired lease -> PENDING (attempts remain) or DEAD. The attempt counts."""
    t = _now(now)
    expired = (
        sa.select(jobs.c.id)
        .where(jobs.c.status == S.PROCESSING, jobs.c.locked_until < t)
        .order_by(jobs.c.locked_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    retry = jobs.c.attempts < jobs.c.max_attempts
    statement = (
        sa.update(jobs)
        .where(_picked_ids(expired), jobs.c.status == S.PROCESSING, jobs.c.locked_until < t)
        .values(
            status=sa.case((retry, S.PENDING.value), else_=S.DEAD.value),
            run_at=t,
            last_error=sa.func.concat("lease expired; worker ", jobs.c.locked_by),
            finished_at=sa.case((retry, None), else_=t),
            updated_at=t,
            **_RELEASED_LEASE,
        )
        .returning(jobs.c.id, jobs.c.job_id, jobs.c.status)
    )
    rows = conn.execute(statement).all()
    return sorted((RescuedJob(r.id, r.job_id, JobStatus(r.status)) for r in rows), key=_by_id)


_by_id = operator.attrgetter("id")  # claimed and rescued jobs alike, in the order of their rows


def promote_due_retries(conn: Connection, *, limit: int = 1000, now: datetime | None = None) -> int:
    """FAILED whose backoff has passed -> PENDING; returns how many moved."""
    t = _now(now)
    due = (
        sa.select(jobs.c.id)
        .where(jobs.c.status == S.FAILED, jobs.c.run_at <= t)
        .order_by(jobs.c.run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        sa.update(jobs)
        .where(_picked_ids(due), jobs.c.status == S.FAILED)
        .values(status=S.PENDING.value, updated_at=t)
    )
    return conn.execute(statement).rowcount


def prune_finished(
    conn: Connection,
    *,
    older_than: timedelta,
    statuses: Iterable[JobStatus] = FINISHED_STATES,
    limit: int = 1000,
    now: datetime | None = None,
) -> int:
    """Delete up to ``limit`` finished rows whose ``finished_at`` is older than the retention."""
    chosen = set(statuses)
    if not chosen <= FINISHED_STATES:
        unfinished = sorted(chosen - FINISHED_STATES)
        raise ValueError(f"only finished states can be pruned, not {unfinished}")
    cutoff = _now(now) - sa.literal(older_than, sa.Interval)
    old = (
        sa.select(jobs.c.id)
        .where(_in(chosen), jobs.c.finished_at < cutoff)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(sa.delete(jobs).where(_picked_ids(old), _in(chosen))).rowcount


# --- operators -----------------------------------------------------------------------------------


CANCEL_SOURCES = sources_of(S.CANCELLED)
"""What an operator may cancel: PENDING, PUBLISHED, FAILED. Never PROCESSING: a worker holds it."""


def _only(sources: Iterable[JobStatus], allowed: frozenset[JobStatus]) -> frozenset[JobStatus]:
    chosen = frozenset(sources)
    if not chosen <= allowed:
        raise ValueError(f"only {sorted(allowed)} may move here, not {sorted(chosen - allowed)}")
    return chosen


def cancel(
    conn: Connection,
    job_ids: Sequence[str],
    *,
    reason: str,
    sources: Iterable[JobStatus] = CANCEL_SOURCES,
    now: datetime | None = None,
) -> list[str]:
    """PENDING, PUBLISHED or FAILED -> CANCELLED; returns the ``job_id`` of each cancelled job.

    ``sources`` narrows the states that may move (the CLI passes the ``--status`` it previewed).
    """
    t = _now(now)
    statement = (
        sa.update(jobs)
        .where(jobs.c.job_id == sa.any_(_text_array(job_ids)), _in(_only(sources, CANCEL_SOURCES)))
        .values(status=S.CANCELLED.value, last_error=reason, finished_at=t, updated_at=t)
        .returning(jobs.c.job_id)
    )
    return sorted(row[0] for row in conn.execute(statement))


REQUEUE_SOURCES = sources_of(S.PENDING) - {S.PROCESSING, S.COMPLETED}
"""What an operator may requeue: a lost publication, a waiting retry, a dead or cancelled job.
(A completed job comes back only through :func:`replay`.)"""


def requeue(
    conn: Connection,
    job_ids: Sequence[str],
    *,
    sources: Iterable[JobStatus] = REQUEUE_SOURCES,
    now: datetime | None = None,
) -> list[str]:
    """PUBLISHED, FAILED, DEAD or CANCELLED -> PENDING, due now.

    DEAD and CANCELLED jobs get a fresh set of attempts; the others keep theirs. ``sources``
    narrows the states that may move (``outbox jobs requeue-dead`` passes DEAD alone).
    """
    t = _now(now)
    fresh = jobs.c.status.in_([S.DEAD.value, S.CANCELLED.value])
    statement = (
        sa.update(jobs)
        .where(jobs.c.job_id == sa.any_(_text_array(job_ids)), _in(_only(sources, REQUEUE_SOURCES)))
        .values(
            status=S.PENDING.value,
            attempts=sa.case((fresh, 0), else_=jobs.c.attempts),
            run_at=t,
            finished_at=None,
            updated_at=t,
        )
        .returning(jobs.c.job_id)
    )
    return sorted(row[0] for row in conn.execute(statement))


# --- reads ---------------------------------------------------------------------------------------


def get_job(conn: Connection, job_id: str) -> JobRecord | None:
    """The job with this ``job_id``, or None."""
    row = conn.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    return None if row is None else JobRecord.from_row(row)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list; every field that is set must match."""

    statuses: frozenset[JobStatus] | None = None
    type: str | None = None
    key: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    job_ids: frozenset[str] | None = None
    finished_before: datetime | None = None


def _filter_conditions(job_filter: JobFilter) -> list[sa.ColumnElement[bool]]:
    f = job_filter
    conditions = [] if f.statuses is None else [_in(f.statuses)]
    if f.type is not None:
        conditions.append(jobs.c.type == f.type)
    if f.key is not None:
        conditions.append(jobs.c.key == f.key)
    if f.created_after is not None:
        conditions.append(jobs.c.created_at >= f.created_after)
    if f.created_before is not None:
        conditions.append(jobs.c.created_at < f.created_before)
    if f.job_ids is not None:
        conditions.append(jobs.c.job_id == sa.any_(_text_array(sorted(f.job_ids))))
    if f.finished_before is not None:
        conditions.append(jobs.c.finished_at < f.finished_before)
    return conditions


def list_jobs(
    conn: Connection, job_filter: JobFilter, *, limit: int = 50, before_id: int | None = None
) -> list[JobRecord]:
    """Newest first; pass the last row's ``id`` as ``before_id`` for the next page (keyset)."""
    statement = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    conditions = _filter_conditions(replace(job_filter, statuses=job_filter.statuses or None))
    if before_id is not None:
        conditions.append(jobs.c.id < before_id)
    rows = conn.execute(statement.where(*conditions)).mappings()
    return [JobRecord.from_row(r) for r in rows]


def backlog_stats(conn: Connection, *, now: datetime | None = None) -> BacklogStats:
    """Counts per status (zero included) and the age of the oldest due PENDING job."""
    counts = dict.fromkeys(JobStatus, 0)
    for status, count in conn.execute(
        sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
    ):
        counts[JobStatus(status)] = count
    t = _now(now)
    age = conn.execute(
        sa.select(sa.func.extract("epoch", t - sa.func.min(jobs.c.run_at))).where(
            jobs.c.status == S.PENDING, jobs.c.run_at <= t
        )
    ).scalar_one()
    oldest = None if age is None else float(age)
    return BacklogStats(counts=counts, oldest_pending_age_seconds=oldest)


def new_lease_token() -> str:
    """A token no lease holds; tests use it to play a zombie worker."""
    return str(uuid.uuid4())


# --- gateway and operators -----------------------------------------------------------------------

BACKLOG_STATES = frozenset({S.PENDING, S.PUBLISHED})
"""What counts towards a type's backlog: jobs waiting to be published or claimed."""


def count_backlog(conn: Connection, job_type: str, *, limit: int) -> int:
    """PENDING and PUBLISHED jobs of ``job_type``, counted up to ``limit`` (the answer is capped).

    The cap keeps the cost bounded: the gateway only needs to know whether a bound is passed,
    and counting a backlog of millions on every check would itself become the overload.
    """
    return _count_backlog_capped(conn, [jobs.c.type == job_type], limit)


def count_runnable(
    conn: Connection, types: Sequence[str], *, limit: int, now: datetime | None = None
) -> int:
    """Due jobs (:data:`BACKLOG_STATES`, ``run_at`` passed) of ``types``, counted up to ``limit``.

    What a worker handling ``types`` could start now: its autoscaler and the
    ``outbox_worker_backlog_per_capacity`` gauge divide it by the worker's slots. Unlike
    :func:`count_backlog`, jobs scheduled for later do not count: no thread could run them yet.
    """
    conditions = [jobs.c.type.in_(list(types)), jobs.c.run_at <= _now(now)]
    return _count_backlog_capped(conn, conditions, limit)


def _count_backlog_capped(
    conn: Connection, conditions: Sequence[sa.ColumnElement[bool]], limit: int
) -> int:
    """Count PENDING and PUBLISHED rows meeting ``conditions``, up to ``limit``.

    One capped count per state, added: each state alone is a partial index's predicate, where
    ``status IN (both)`` matched no index and read the whole table, finished rows included.
    """

    def capped(state: JobStatus) -> sa.ScalarSelect[int]:
        rows = sa.select(sa.literal(1)).where(jobs.c.status == state, *conditions).limit(limit)
        return sa.select(sa.func.count()).select_from(rows.subquery()).scalar_subquery()

    total = sa.func.least(capped(S.PENDING) + capped(S.PUBLISHED), limit)
    return int(conn.execute(sa.select(total)).scalar_one())


def record_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    job_filter: Mapping[str, Any],
    count: int,
    reason: str,
    now: datetime | None = None,
) -> int:
    """Write down what an operator changed; call it in the transaction of the change. Its id."""
    statement = (
        sa.insert(audit)
        .values(
            at=_now(now),
            actor=actor,
            action=action,
            filter=sa.cast(sa.literal(json.dumps(dict(job_filter)), sa.Text), pg.JSONB),
            count=count,
            reason=reason,
        )
        .returning(audit.c.id)
    )
    return int(conn.execute(statement).scalar_one())


# --- operator commands: preview, batches, replay, purge, the audit trail ------------------------
# `outbox jobs retry|cancel|requeue-dead|purge` and `outbox replay` first count and sample what a
# filter matches (the preview). Applying, they take the matches batch after batch in id order, up
# to the last id matched when they started (rows added meanwhile, replayed copies among them, are
# never taken), and move each batch with one guarded statement: `requeue` and `cancel` above (the
# gateway's single-job routes use them too), `replay` and `purge` here. That statement checks the
# status again, so a row that changed since it was picked is simply left alone.

REPLAY_SOURCES = frozenset({S.PUBLISHED, S.COMPLETED})
"""What an operator may replay: jobs that were published (and maybe processed) already."""


def database_now(conn: Connection) -> datetime:
    """The database clock (the start of the transaction)."""
    now: datetime = conn.execute(sa.select(sa.func.now())).scalar_one()
    return now


def count_matching(conn: Connection, job_filter: JobFilter) -> int:
    """How many jobs match ``job_filter``."""
    statement = sa.select(sa.func.count()).select_from(jobs)
    return int(conn.execute(statement.where(*_filter_conditions(job_filter))).scalar_one())


def last_matching_id(conn: Connection, job_filter: JobFilter) -> int | None:
    """The highest ``id`` matching ``job_filter``: where a bulk command stops."""
    statement = sa.select(sa.func.max(jobs.c.id)).where(*_filter_conditions(job_filter))
    last: int | None = conn.execute(statement).scalar_one()
    return last


def matching_batch(
    conn: Connection, job_filter: JobFilter, *, after_id: int, up_to_id: int, limit: int
) -> list[JobRecord]:
    """Up to ``limit`` jobs matching ``job_filter`` with ``after_id < id <= up_to_id``, by id.

    Also the preview's sample (``after_id=0``). No rows are locked: the statement that moves
    them checks their status again.
    """
    statement = (
        sa.select(jobs)
        .where(*_filter_conditions(job_filter), jobs.c.id > after_id, jobs.c.id <= up_to_id)
        .order_by(jobs.c.id)
        .limit(limit)
    )
    return [JobRecord.from_row(r) for r in conn.execute(statement).mappings()]


def replay(
    conn: Connection,
    job_ids: Sequence[str],
    *,
    to_topic: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """PUBLISHED or COMPLETED -> PENDING, due now, fresh attempts, same ``job_id``: published again.

    The last run's traces (publication, receipt, result, progress, error, times) are cleared and,
    with ``to_topic``, the job's topic is replaced. The new ``run_at`` makes the relay's due time
    new, and with it the Redis publisher's dedup key: the replay adds a new stream entry.
    """
    t = _now(now)
    last_run = ("published_at", "publish_receipt", "started_at", "finished_at", "result",
                "progress", "last_error", "last_traceback")  # fmt: skip
    values: dict[str, Any] = dict.fromkeys(last_run)
    values |= {"status": S.PENDING.value, "attempts": 0, "run_at": t, "updated_at": t}
    if to_topic is not None:
        values["topic"] = to_topic
    statement = (
        sa.update(jobs)
        .where(jobs.c.job_id == sa.any_(_text_array(job_ids)), _in(REPLAY_SOURCES))
        .values(values)
        .returning(jobs.c.job_id)
    )
    return sorted(row[0] for row in conn.execute(statement))


def purge(
    conn: Connection,
    job_ids: Sequence[str],
    *,
    finished_before: datetime,
    statuses: Iterable[JobStatus] = FINISHED_STATES,
) -> list[str]:
    """Delete these jobs if they are finished (COMPLETED, DEAD, CANCELLED) before the bound."""
    statement = (
        sa.delete(jobs)
        .where(
            jobs.c.job_id == sa.any_(_text_array(job_ids)),
            _in(_only(statuses, FINISHED_STATES)),
            jobs.c.finished_at < finished_before,
        )
        .returning(jobs.c.job_id)
    )
    return sorted(row[0] for row in conn.execute(statement))


def wake_listeners(conn: Connection) -> None:
    """NOTIFY the relay and table-source workers (on commit): jobs are PENDING again."""
    conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "pending")))


@dataclass(frozen=True)
class AuditRecord:
    """One operator action as :func:`record_audit` wrote it down."""

    id: int
    at: datetime
    actor: str
    action: str
    filter: dict[str, Any]
    count: int
    reason: str

    def to_json_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def list_audit(
    conn: Connection,
    *,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[AuditRecord]:
    """Operator actions, newest first; ``since`` keeps those at or after that time."""
    statement = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
    if action is not None:
        statement = statement.where(audit.c.action == action)
    if since is not None:
        statement = statement.where(audit.c.at >= since)
    return [AuditRecord(**row) for row in conn.execute(statement).mappings()]
