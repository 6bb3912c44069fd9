"""A worker's configuration, and each job type's policy merged from code and settings.

Per type, an operator's setting (``OUTBOX_MAX_ATTEMPTS_BY_TYPE``, ``OUTBOX_RATE_LIMITS_BY_TYPE``)
beats the handler's decorator, which beats the worker-wide default: operators can change a
type's behaviour without a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from outbox.backoff import BackoffPolicy
from worker.autoscale import ScalePolicy
from worker.handlers import HandlerRegistry
from worker.rate_limits import RateLimit


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a :class:`~worker.Worker` is told, with the defaults of the settings.

    ``concurrency`` is the number of handler slots; with ``autoscale`` it is where they start
    (within the policy's bounds) and the autoscaler resizes them every ``backlog_interval``
    seconds, when the backlog gauge is refreshed.
    """

    concurrency: int = 8
    autoscale: ScalePolicy | None = None  # None: a fixed concurrency
    backlog_interval: float = 2.0
    batch_size: int = 100
    lease: timedelta = timedelta(seconds=30)
    poll_interval: float = 1.0
    shutdown_grace: float = 30.0
    default_max_attempts: int = 5
    max_attempts_by_type: Mapping[str, int] = field(default_factory=dict)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    rate_limits_by_type: Mapping[str, RateLimit] = field(default_factory=dict)
    promote_interval: float = 1.0
    rescue_interval: float = 5.0
    prune_interval: float = 60.0
    retention: timedelta | None = timedelta(days=7)  # None: finished jobs are kept


@dataclass(frozen=True)
class TypePolicies:
    """Each type's attempts, concurrency cap, rate limit and backoff."""

    max_attempts: Mapping[str, int]
    concurrency_limits: Mapping[str, int]
    rate_limits: Mapping[str, RateLimit]
    backoffs: Mapping[str, BackoffPolicy]
    default_backoff: BackoffPolicy

    def backoff_for(self, job_type: str) -> BackoffPolicy:
        return self.backoffs.get(job_type, self.default_backoff)

    @classmethod
    def build(cls, registry: HandlerRegistry, config: WorkerConfig) -> TypePolicies:
        specs = registry.handlers.values()
        default = config.backoff
        return cls(
            max_attempts={s.type: s.max_attempts for s in specs if s.max_attempts}
            | dict(config.max_attempts_by_type),
            concurrency_limits={s.type: s.concurrency for s in specs if s.concurrency},
            rate_limits={s.type: s.rate_limit for s in specs if s.rate_limit}
            | dict(config.rate_limits_by_type),
            backoffs={
                s.type: BackoffPolicy(
                    base_seconds=s.retry_base_seconds or default.base_seconds,
                    cap_seconds=s.retry_max_seconds or default.cap_seconds,
                    jitter_seconds=default.jitter_seconds,
                )
                for s in specs
                if s.retry_base_seconds or s.retry_max_seconds
            },
            default_backoff=default,
        )
