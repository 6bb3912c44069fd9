"""The job statements driven by several simulated workers against a real PostgreSQL.

Hypothesis picks the steps: jobs are enqueued; workers claim, complete, fail (retry or
dead-letter) and dead-letter outright (a permanent error) with leases that may be stale; the
rescuer and the promoter run; an operator cancels and requeues; time moves on (through the
statements' ``now``). A model says what each step must do, and after every step the table must
match it:
- every job is in exactly one legal state, and only moves as ``outbox.states`` allows;
- a completion, retry or dead-letter with a lease that is no longer current changes nothing,
  so no job is completed twice and a rescued job's old holder cannot finish it;
- attempts are counted at claim and never pass ``max_attempts``;
- a job has a lease exactly while PROCESSING, and no two workers hold its current lease;
- no job is lost: every job is always in the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.job_record import Lease
from outbox.schema import jobs
from outbox.states import JobStatus as S
from outbox.states import can_transition

JOBS = 3  # at the start; enqueue adds up to MAX_JOBS
MAX_JOBS = 6
MAX_ATTEMPTS = 3
LEASE = timedelta(seconds=30)
RETRY_IN = timedelta(seconds=10)
WORKERS = ("w1", "w2", "w3")


@dataclass
class ModelJob:
    status: S = S.PENDING
    attempts: int = 0
    token: str | None = None
    locked_until: datetime | None = None
    run_at: datetime | None = None  # None: due since the insert
    completions: int = 0


@dataclass
class SimulatedWorker:
    held: list[Lease] = field(default_factory=list)  # every lease it was given, stale ones too


_engine: Engine | None = None


@pytest.fixture(scope="module", autouse=True)
def database(property_engine: Engine) -> Iterator[None]:
    """The machine is built by Hypothesis, not pytest: it finds the engine here."""
    global _engine
    _engine = property_engine
    yield
    _engine = None


class JobStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert _engine is not None
        self.engine = _engine
        with self.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE outbox_jobs"))
            self.now = queries.database_now(conn)
        self.model: dict[str, ModelJob] = {}
        self.seen: dict[str, S] = {}  # each job's state after the last step
        self.workers = {name: SimulatedWorker() for name in WORKERS}
        for _ in range(JOBS):
            self.enqueue()

    # --- steps ----------------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_JOBS)
    @rule()
    def enqueue(self) -> None:
        # Due at the model's now, not the database clock's: time here moves only by steps.
        spec = gateway.JobSpec("prop.job", {"n": len(self.model)}, run_at=self.now)
        with self.engine.begin() as conn:
            [job_id] = gateway.enqueue_many(conn, [spec], notify=False)
        self.model[job_id] = ModelJob()

    @rule(seconds=st.sampled_from([1, 5, 11, 31, 61]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        due = {j for j, m in self.model.items()
               if m.status is S.PENDING and (m.run_at is None or m.run_at <= self.now)}  # fmt: skip
        with self.engine.begin() as conn:
            claimed = queries.claim_batch(
                conn, worker_id=worker, limit=limit, lease=LEASE,
                default_max_attempts=MAX_ATTEMPTS, now=self.now,
            )  # fmt: skip
        got = {c.job_id for c in claimed}
        assert got <= due, f"claimed jobs that were not due and PENDING: {got - due}"
        assert len(got) == min(limit, len(due)), "a due job was left behind with room to spare"
        for c in claimed:
            job = self.model[c.job_id]
            job.status, job.attempts, job.token = S.PROCESSING, job.attempts + 1, c.lease_token
            job.locked_until = self.now + LEASE
            assert c.attempt == job.attempts
            self.workers[worker].held.append(Lease(c.id, c.lease_token))

    @rule(worker=st.sampled_from(WORKERS), pick=st.integers(0, 50))
    @precondition(lambda self: any(w.held for w in self.workers.values()))
    def complete(self, worker: str, pick: int) -> None:
        picked = self._picked(worker, pick)
        if picked is None:
            return
        lease, job_id, job, holds = picked
        with self.engine.begin() as conn:
            done = queries.mark_completed(conn, [queries.Completion(lease)], now=self.now)
        assert done == ([lease.id] if holds else []), f"{job_id}: completion under a stale lease"
        event("complete: lease held" if holds else "complete: stale lease, refused")
        if holds:
            job.status, job.token, job.completions = S.COMPLETED, None, job.completions + 1

    @rule(worker=st.sampled_from(WORKERS), pick=st.integers(0, 50))
    @precondition(lambda self: any(w.held for w in self.workers.values()))
    def fail(self, worker: str, pick: int) -> None:
        """What the worker does after a handler raised: retry while attempts remain, else DEAD."""
        picked = self._picked(worker, pick)
        if picked is None:
            return
        lease, _, job, holds = picked
        with self.engine.begin() as conn:
            retried = queries.schedule_retry(conn, lease, retry_in=RETRY_IN, error="boom",
                                             now=self.now)  # fmt: skip
            dead = False if retried else queries.dead_letter(conn, lease, error="boom",
                                                             now=self.now)  # fmt: skip
        assert retried == (holds and job.attempts < MAX_ATTEMPTS)
        assert dead == (holds and job.attempts >= MAX_ATTEMPTS)
        if retried:
            job.status, job.token, job.run_at = S.FAILED, None, self.now + RETRY_IN
        elif dead:
            job.status, job.token = S.DEAD, None

    @rule(worker=st.sampled_from(WORKERS), pick=st.integers(0, 50))
    @precondition(lambda self: any(w.held for w in self.workers.values()))
    def fail_permanently(self, worker: str, pick: int) -> None:
        """A permanent error: DEAD at once, attempts left or not, if the lease holds."""
        picked = self._picked(worker, pick)
        if picked is None:
            return
        lease, _, job, holds = picked
        with self.engine.begin() as conn:
            dead = queries.dead_letter(conn, lease, error="refused", now=self.now)
        assert dead == holds
        if dead:
            job.status, job.token = S.DEAD, None

    @rule(pick=st.integers(0, 50))
    def cancel(self, pick: int) -> None:
        job_id = self._any_job(pick)
        with self.engine.begin() as conn:
            cancelled = queries.cancel(conn, [job_id], reason="operator", now=self.now)
        job = self.model[job_id]
        movable = job.status in {S.PENDING, S.PUBLISHED, S.FAILED}  # never a held job
        assert cancelled == ([job_id] if movable else [])
        event(f"cancel {job.status}")  # --hypothesis-show-statistics: which states were tried
        if movable:
            job.status = S.CANCELLED

    @rule(pick=st.integers(0, 50))
    def requeue(self, pick: int) -> None:
        job_id = self._any_job(pick)
        with self.engine.begin() as conn:
            requeued = queries.requeue(conn, [job_id], now=self.now)
        job = self.model[job_id]
        movable = job.status in {S.PUBLISHED, S.FAILED, S.DEAD, S.CANCELLED}
        assert requeued == ([job_id] if movable else [])
        event(f"requeue {job.status}")
        if movable:
            if job.status in {S.DEAD, S.CANCELLED}:
                job.attempts = 0  # a fresh set of attempts; a waiting retry keeps its count
            job.status, job.run_at = S.PENDING, self.now

    @rule()
    def rescue(self) -> None:
        with self.engine.begin() as conn:
            rescued = {r.job_id: r.status for r in queries.rescue_expired(conn, now=self.now)}
        expected = {}
        for job_id, job in self.model.items():
            if job.status is S.PROCESSING and job.locked_until and job.locked_until < self.now:
                job.status = S.PENDING if job.attempts < MAX_ATTEMPTS else S.DEAD
                job.token, job.run_at = None, self.now
                expected[job_id] = job.status
        assert rescued == expected

    @rule()
    def promote(self) -> None:
        with self.engine.begin() as conn:
            moved = queries.promote_due_retries(conn, now=self.now)
        due = [
            j for j in self.model.values()
            if j.status is S.FAILED and j.run_at is not None and j.run_at <= self.now
        ]  # fmt: skip
        for job in due:
            job.status = S.PENDING
        assert moved == len(due)

    # --- what must always hold ------------------------------------------------------------------

    @invariant()
    def the_table_matches_the_model(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.job_id, jobs.c.status, jobs.c.attempts,
                                          jobs.c.lease_token)).all()  # fmt: skip
        found = {r.job_id: (S(r.status), r.attempts, r.lease_token) for r in rows}
        expected = {j: (m.status, m.attempts, m.token) for j, m in self.model.items()}
        assert found == expected  # nothing lost, nothing invented, every move as the model says

    @invariant()
    def every_move_is_legal_and_only_a_processing_job_has_a_lease(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.job_id, jobs.c.status, jobs.c.lease_token,
                                          jobs.c.locked_by, jobs.c.locked_until)).all()  # fmt: skip
        for row in rows:
            status = S(row.status)  # raises on a value that is no state
            before = self.seen.get(row.job_id, S.PENDING)
            assert status == before or can_transition(before, status), (before, status)
            self.seen[row.job_id] = status
            leased = (row.lease_token, row.locked_by, row.locked_until)
            if status is S.PROCESSING:
                assert None not in leased
                holders = [w for w in self.workers.values()
                           if any(h.lease_token == row.lease_token for h in w.held)]  # fmt: skip
                assert len(holders) == 1, "the current lease is held by exactly one worker"
            else:
                assert leased == (None, None, None)

    @invariant()
    def attempts_stay_within_the_maximum_and_completions_happen_once(self) -> None:
        assert all(m.attempts <= MAX_ATTEMPTS for m in self.model.values())
        assert all(m.completions <= 1 for m in self.model.values())

    # --- helpers --------------------------------------------------------------------------------

    def _any_job(self, pick: int) -> str:
        return list(self.model)[pick % len(self.model)]

    def _pick(self, worker: str, pick: int) -> Lease | None:
        held = self.workers[worker].held
        return held[pick % len(held)] if held else None

    def _picked(self, worker: str, pick: int) -> tuple[Lease, str, ModelJob, bool] | None:
        """One lease ``worker`` holds, its job and model, and whether the lease still holds."""
        lease = self._pick(worker, pick)
        if lease is None:
            return None
        job_id, job = self._job_of(lease)
        holds = job.status is S.PROCESSING and job.token == lease.lease_token
        return lease, job_id, job, holds

    def _job_of(self, lease: Lease) -> tuple[str, ModelJob]:
        with self.engine.connect() as conn:
            query = sa.select(jobs.c.job_id).where(jobs.c.id == lease.id)
            job_id = conn.execute(query).scalar_one()
        return job_id, self.model[job_id]


JobStateMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI does not flake on a new seed
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_job_statements_keep_their_promises = JobStateMachine.TestCase
