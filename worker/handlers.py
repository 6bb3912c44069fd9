"""The handler registry: which function runs each job type, with its policy, and cron jobs.

``@worker.handler("email.send")`` registers on the default registry, which ``outbox worker
--handlers MODULE`` fills by importing the module. Tests and embedders build their own
:class:`HandlerRegistry` instead, so nothing global leaks between them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from apscheduler.triggers.cron import CronTrigger

from outbox.new_job import NewJob
from worker.job import Job
from worker.rate_limits import RateLimit

Handler = Callable[[Job], Any]
H = TypeVar("H", bound=Handler)
F = TypeVar("F")


@dataclass(frozen=True)
class HandlerSpec:
    """A handler and its policy; None falls back to the worker's settings."""

    type: str
    func: Handler
    max_attempts: int | None = None
    retry_base_seconds: float | None = None
    retry_max_seconds: float | None = None
    timeout_seconds: float | None = None
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    is_async: bool = field(init=False)
    """An ``async def`` handler (or an object whose ``__call__`` is one): run on the event loop."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", is_async_callable(self.func))


@dataclass(frozen=True)
class CronSpec:
    """A job enqueued on a schedule: ``schedule`` is a crontab line, read in ``timezone``."""

    name: str
    schedule: str
    type: str
    payload: Any = field(default_factory=dict)
    timezone: str = "UTC"
    priority: int = 0

    def trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.schedule, timezone=self.timezone)


class HandlerRegistry:
    """Handlers by job type, and cron jobs by name. Registering the same name twice is an error."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self._crons: dict[str, CronSpec] = {}

    def handler(
        self,
        type: str,
        *,
        max_attempts: int | None = None,
        retry_base_seconds: float | None = None,
        retry_max_seconds: float | None = None,
        timeout_seconds: float | None = None,
        concurrency: int | None = None,
        rate_limit: str | None = None,
    ) -> Callable[[H], H]:
        """Decorate the function that runs jobs of ``type``; the function is returned unchanged.

        It receives a :class:`~worker.job.Job`. Returning completes the job (a JSON value
        returned is stored as its result); raising schedules a retry with backoff;
        :class:`~worker.PermanentError` sends it to DEAD; :class:`~worker.Retry` runs it later.
        ``concurrency`` caps this type's simultaneous runs in one worker; ``rate_limit`` is
        like ``"10/s"`` or ``"2/s per key"``; ``timeout_seconds`` fails an attempt that runs longer.
        An ``async def`` handler runs on the worker's event loop instead of a thread of its own,
        and a timeout cancels it at its next ``await``.
        """
        _check_optional_positive(
            max_attempts=max_attempts, retry_base_seconds=retry_base_seconds,
            retry_max_seconds=retry_max_seconds, timeout_seconds=timeout_seconds,
            concurrency=concurrency,
        )  # fmt: skip
        limit = RateLimit.parse(rate_limit) if rate_limit is not None else None
        NewJob.build(type, None)  # the same rule on type names as enqueue; raises if broken

        def register(func: H) -> H:
            if type in self._handlers:
                raise ValueError(f"a handler for job type {type!r} is already registered")
            self._handlers[type] = HandlerSpec(
                type, func, max_attempts, retry_base_seconds, retry_max_seconds,
                timeout_seconds, concurrency, limit,
            )  # fmt: skip
            return func

        return register

    def cron(
        self,
        name: str,
        schedule: str,
        *,
        type: str,
        payload: Any = None,
        timezone: str = "UTC",
        priority: int = 0,
    ) -> Callable[[F], F]:
        """Enqueue a ``type`` job with ``payload`` whenever the crontab ``schedule`` fires.

        Registered at once, so it works as a plain call or as a decorator above the handler.
        Every worker runs the schedule; each firing becomes one job whichever worker wins.
        """
        if name in self._crons:
            raise ValueError(f"a cron job named {name!r} is already registered")
        spec = CronSpec(
            name, schedule, type, {} if payload is None else payload, timezone, priority
        )
        spec.trigger()  # a bad crontab line fails here, at import, not at the first firing
        # Checked as the longest job_id a firing gets (cron_enqueuer.cron_job_id), payload too.
        longest_id = f"cron:{name}:0000-00-00T00:00:00.000000+00:00"
        NewJob.build(type, spec.payload, job_id=longest_id, priority=priority)
        self._crons[name] = spec
        return _unchanged

    def get(self, job_type: str) -> HandlerSpec | None:
        return self._handlers.get(job_type)

    @property
    def handlers(self) -> Mapping[str, HandlerSpec]:
        return dict(self._handlers)

    @property
    def crons(self) -> Mapping[str, CronSpec]:
        return dict(self._crons)


def is_async_callable(func: object) -> bool:
    """True for a coroutine function, a partial of one, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what is asked about
    )


def _unchanged(func: F) -> F:
    return func


def _check_optional_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


default_registry = HandlerRegistry()
"""The registry ``outbox worker --handlers MODULE`` runs; ``worker.handler`` registers here."""

handler = default_registry.handler
cron = default_registry.cron
