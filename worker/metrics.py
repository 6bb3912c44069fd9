"""The worker's Prometheus metrics, on a registry of its own (several workers can share a process).

Outcomes are counted by the outcome writer only once their transaction has committed, so a write
lost to an outage counts nothing (its job is rescued and counted then). Labels stay bounded: a
job type has a handler in this worker's registry (its code, not its data), and the outcome is
one of :class:`JobOutcome`; never a job id or key.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

from outbox.batch_histogram import BatchHistogram

# A handler run spans a millisecond (a cache write) to minutes (a report); timeouts cap it.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0, 300.0, 900.0)  # fmt: skip
# Publish (or enqueue) to finish includes queueing and retries' backoff: seconds to hours.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0, 4 * 3600.0)  # fmt: skip


class JobOutcome(StrEnum):
    """What the committed write of one attempt's outcome did (the ``outcome`` label)."""

    COMPLETED = "completed"
    RETRIED = "retried"  # FAILED, another attempt after the backoff
    DEAD = "dead"  # attempts used up, or a permanent error (a last attempt that timed out too)
    SNOOZED = "snoozed"  # worker.Retry or a rate limit: PENDING again, the attempt given back
    TIMED_OUT = "timed_out"  # ran past its timeout; FAILED, retried after the backoff
    FENCED = "fenced"  # the lease was lost (the job was rescued): the write changed nothing


FINISHED = frozenset({JobOutcome.COMPLETED, JobOutcome.DEAD})
"""Outcomes that end a job: only these observe ``outbox_worker_publish_to_finish_seconds``."""

RecordedOutcome = tuple[str, JobOutcome, float | None, datetime | None]
"""One committed outcome: job type, outcome, seconds the handler ran, and when it was published
(or created, without a broker)."""


class WorkerMetrics:
    """Every worker metric; names and labels are listed in docs/metrics.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.jobs = Counter(
            "outbox_worker_jobs_total",
            "Attempts whose outcome was committed, by type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.job_duration = BatchHistogram(
            "outbox_worker_job_duration_seconds",
            "Handler run time of attempts whose outcome was committed (to the timeout, if hit).",
            ["type"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.publish_to_finish = BatchHistogram(
            "outbox_worker_publish_to_finish_seconds",
            "From the job's published_at (else its created_at) to the commit of COMPLETED or DEAD.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lease_rescues = Counter(
            "outbox_worker_lease_rescues_total",
            "Jobs whose lease expired, taken back by this worker's rescue duty.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "outbox_worker_in_flight",
            "Slots in use: jobs claimed and not yet both returned and written.",
            registry=self.registry,
        )
        self.concurrency = Gauge(
            "outbox_worker_concurrency",
            "Handler slots (threads) the worker runs now.",
            registry=self.registry,
        )
        self.backlog_per_capacity = Gauge(
            "outbox_worker_backlog_per_capacity",
            "Due PENDING or PUBLISHED jobs of the handled types, divided by the concurrency.",
            registry=self.registry,
        )
        self.loop_heartbeat = Gauge(
            "outbox_worker_last_loop_timestamp_seconds",
            "Unix time the worker loop last went round; /healthz fails when it stalls.",
            registry=self.registry,
        )

    def record_outcomes(
        self, outcomes: Iterable[RecordedOutcome], *, committed_at: datetime | None = None
    ) -> None:
        """Count a batch of committed outcomes; call it after the commit, never before.

        Per batch, not per job: one counter increment per (type, outcome), one histogram update
        per type; per job, the lookups and locks cost the outcome writer more than its statement.
        """
        # The worker's clock minus the database's, as the relay's commit-to-publish.
        end = committed_at or datetime.now(UTC)
        counts: collections.Counter[tuple[str, JobOutcome]] = collections.Counter()
        durations: dict[str, list[float]] = collections.defaultdict(list)
        finished_since: list[datetime] = []
        for job_type, outcome, run_seconds, since in outcomes:
            counts[job_type, outcome] += 1
            if run_seconds is not None:
                durations[job_type].append(run_seconds)
            if since is not None and outcome in FINISHED:
                finished_since.append(since)
        for job_type, seconds in durations.items():
            self.job_duration.observe_all(seconds, (job_type,))
        if finished_since:
            self.publish_to_finish.observe_all([(end - s).total_seconds() for s in finished_since])
        for (job_type, outcome), count in counts.items():
            self.jobs.labels(job_type, outcome.value).inc(count)
