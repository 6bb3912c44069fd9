"""The worker: claims jobs, runs registered handlers, completes them or backs off.

Handlers register on a registry, by default the module-level one::

    import worker

    @worker.handler("email.send", max_attempts=10, timeout_seconds=30)
    def send(job: worker.Job) -> dict[str, str]:
        ...  # return: COMPLETED; raise: retry with backoff; worker.PermanentError: DEAD

``outbox worker --handlers MODULE`` imports the module and runs :class:`Worker` on it.
"""

from __future__ import annotations

from worker.autoscale import ScalePolicy
from worker.handler_errors import PermanentError, Retry
from worker.handlers import HandlerRegistry, cron, default_registry, handler
from worker.job import Job
from worker.metrics import WorkerMetrics
from worker.policy import WorkerConfig
from worker.rate_limits import RateLimit
from worker.worker_loop import ClaimRound, Worker

__all__ = [
    "ClaimRound",
    "HandlerRegistry",
    "Job",
    "PermanentError",
    "RateLimit",
    "Retry",
    "ScalePolicy",
    "Worker",
    "WorkerConfig",
    "WorkerMetrics",
    "cron",
    "default_registry",
    "handler",
]
