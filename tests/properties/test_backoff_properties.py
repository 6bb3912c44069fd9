"""The retry policy, for any settings: the delay after each attempt, each type's policy as the
worker merges it, and the attempt at which a failing job goes DEAD.

- ``BackoffPolicy.delay``: within ``[exponential, exponential + jitter]``, never negative and
  never above the cap; without jitter, fixed (the same for any two equal policies) and never
  shrinking from one attempt to the next; with jitter, never shrinking by more than the jitter.
- ``TypePolicies``: an operator's setting beats the handler's decorator, which beats the
  worker-wide default, for ``max_attempts`` and for the backoff's base and cap.
- Against a real PostgreSQL, through the worker's own outcome writer: a job that fails every
  attempt is retried after exactly its policy's delay while attempts remain, and is DEAD at
  exactly attempt ``max_attempts``, never before or after.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.backoff import BackoffPolicy
from outbox.job_record import Lease
from outbox.schema import jobs
from outbox.states import JobStatus as S
from worker import HandlerRegistry, WorkerConfig
from worker.attempt import Failed
from worker.outcome_writer import OutcomeWriter, Report
from worker.policy import TypePolicies

bases = st.floats(min_value=0.001, max_value=600, allow_nan=False)
caps = st.floats(min_value=0.001, max_value=86_400, allow_nan=False)
jitters = st.floats(min_value=0, max_value=60, allow_nan=False)
attempts = st.integers(min_value=1, max_value=10_000)
TOLERANCE = 1e-6  # float rounding of timedelta (microseconds)
ONE_MICROSECOND = timedelta(microseconds=1)


def exponential(base: float, attempt: int) -> float:
    return base * 2.0 ** min(attempt - 1, 1024) if attempt < 1024 else float("inf")


def bounds(policy: BackoffPolicy, attempt: int) -> tuple[float, float]:
    grown = exponential(policy.base_seconds, attempt)
    cap = policy.cap_seconds
    return min(cap, grown), min(cap, grown + policy.jitter_seconds)


@given(base=bases, cap=caps, jitter=jitters, attempt=attempts)
def test_the_delay_lies_between_the_exponential_and_it_plus_jitter_under_the_cap(
    base: float, cap: float, jitter: float, attempt: int
) -> None:
    delay = BackoffPolicy(base, cap, jitter).delay(attempt).total_seconds()
    low, high = bounds(BackoffPolicy(base, cap, jitter), attempt)
    assert 0 <= delay <= cap + TOLERANCE
    assert low - TOLERANCE <= delay <= high + TOLERANCE


@given(base=bases, cap=caps, attempt=attempts)
def test_without_jitter_the_delay_is_fixed_and_never_shrinks(
    base: float, cap: float, attempt: int
) -> None:
    policy = BackoffPolicy(base, cap, jitter_seconds=0)
    assert policy.delay(attempt) == policy.delay(attempt)
    assert policy.delay(attempt) == BackoffPolicy(base, cap, jitter_seconds=0).delay(attempt)
    assert policy.delay(attempt + 1) >= policy.delay(attempt)


@given(base=bases, cap=caps, jitter=jitters, attempt=attempts)
def test_with_jitter_the_delay_never_shrinks_by_more_than_the_jitter(
    base: float, cap: float, jitter: float, attempt: int
) -> None:
    policy = BackoffPolicy(base, cap, jitter)
    shrink = policy.delay(attempt) - policy.delay(attempt + 1)
    assert shrink.total_seconds() <= jitter + TOLERANCE


@given(attempt=st.integers(max_value=0))
def test_attempts_count_from_one(attempt: int) -> None:
    try:
        BackoffPolicy().delay(attempt)
    except ValueError:
        return
    raise AssertionError(f"delay({attempt}) should be refused")


maybe_attempts = st.none() | st.integers(min_value=1, max_value=50)
maybe_seconds = st.none() | st.floats(min_value=0.001, max_value=3600, allow_nan=False)


@given(default=st.integers(1, 50), decorated=maybe_attempts, operator=maybe_attempts,
       spec_base=maybe_seconds, spec_cap=maybe_seconds, worker_wide=st.builds(
           BackoffPolicy, bases, caps, jitters))  # fmt: skip
def test_each_type_takes_the_operator_setting_then_the_decorator_then_the_default(
    default: int,
    decorated: int | None,
    operator: int | None,
    spec_base: float | None,
    spec_cap: float | None,
    worker_wide: BackoffPolicy,
) -> None:
    registry = HandlerRegistry()
    registry.handler("prop.typed", max_attempts=decorated, retry_base_seconds=spec_base,
                     retry_max_seconds=spec_cap)(lambda job: None)  # fmt: skip
    by_type = {"prop.typed": operator} if operator is not None else {}
    config = WorkerConfig(default_max_attempts=default, max_attempts_by_type=by_type,
                          backoff=worker_wide)  # fmt: skip
    policies = TypePolicies.build(registry, config)

    merged = policies.max_attempts.get("prop.typed", config.default_max_attempts)
    assert merged == next(v for v in (operator, decorated, default) if v is not None)
    backoff = policies.backoff_for("prop.typed")
    assert backoff.base_seconds == (spec_base or worker_wide.base_seconds)
    assert backoff.cap_seconds == (spec_cap or worker_wide.cap_seconds)
    assert backoff.jitter_seconds == worker_wide.jitter_seconds
    assert policies.backoff_for("prop.other") == worker_wide


@settings(max_examples=30, deadline=None, derandomize=True)  # a real database: few, fixed
@given(max_attempts=st.integers(1, 6), base=st.floats(0.001, 600), cap=st.floats(0.001, 3600),
       jitter=st.sampled_from([0.0, 0.5, 30.0]))  # fmt: skip
def test_a_job_failing_every_attempt_is_dead_at_exactly_max_attempts(
    property_engine: Engine, max_attempts: int, base: float, cap: float, jitter: float
) -> None:
    registry = HandlerRegistry()
    registry.handler("prop.failing", max_attempts=max_attempts, retry_base_seconds=base,
                     retry_max_seconds=cap)(lambda job: None)  # fmt: skip
    policies = TypePolicies.build(
        registry, WorkerConfig(backoff=BackoffPolicy(jitter_seconds=jitter))
    )
    with property_engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE outbox_jobs"))
        now = queries.database_now(conn)
        job_id = gateway.enqueue(conn, "prop.failing", {}, run_at=now)
    clock = [now]
    writer = OutcomeWriter(
        property_engine, clock=lambda: clock[0], backoff_for=policies.backoff_for,
        on_written=lambda leases: None, outage_patience_seconds=1,
    )  # fmt: skip
    row = sa.select(jobs.c.status, jobs.c.attempts, jobs.c.run_at).where(jobs.c.job_id == job_id)

    for attempt in range(1, max_attempts + 1):
        with property_engine.begin() as conn:
            queries.promote_due_retries(conn, now=clock[0])
            [claimed] = queries.claim_batch(
                conn, worker_id="prop", limit=10, lease=timedelta(seconds=30),
                default_max_attempts=99, max_attempts_by_type=policies.max_attempts,
                now=clock[0],
            )  # fmt: skip
        assert (claimed.attempt, claimed.max_attempts) == (attempt, max_attempts)
        lease = Lease(claimed.id, claimed.lease_token)
        writer.write([Report(lease, job_id, "prop.failing", attempt, claimed.max_attempts,
                             Failed("boom"))])  # fmt: skip
        with property_engine.connect() as conn:
            status, counted, run_at = conn.execute(row).one()
        assert counted == attempt
        if attempt < max_attempts:
            assert status == S.FAILED, f"attempt {attempt} of {max_attempts}"
            low, high = bounds(policies.backoff_for("prop.failing"), attempt)
            waited = (run_at - clock[0]).total_seconds()
            assert low - TOLERANCE <= waited <= high + TOLERANCE
            clock[0] = run_at  # the next attempt, as soon as it is due and no sooner
            with property_engine.begin() as conn:
                early = queries.promote_due_retries(conn, now=run_at - ONE_MICROSECOND)
            assert early == 0
        else:
            assert status == S.DEAD, f"attempt {attempt} of {max_attempts}"
