"""A worker's capacity: its handler threads, and their number, resized from the due backlog.

Every ``backlog_interval`` the worker loop asks for a sample: the due backlog of the handled
types is counted (capped), published as ``outbox_worker_backlog_per_capacity`` (what an HPA or
KEDA scales replicas on), and, with an autoscale policy, handed to the autoscaler
(:mod:`worker.autoscale`, where the decision lives) together with the most slots busy at once
since the last sample. Only the loop's thread calls :meth:`Capacity.sample`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine

from outbox import queries
from worker.autoscale import Autoscaler, Sample
from worker.executor import Executor
from worker.metrics import WorkerMetrics
from worker.policy import WorkerConfig
from worker.running import RunningJobs

log = logging.getLogger(__name__)

BACKLOG_COUNT_CAP = 10_000
"""The backlog is counted up to this many jobs: enough to scale on, cheap to count often."""


class Capacity:
    """The executor and its size; gauges ``outbox_worker_concurrency`` and the backlog's."""

    def __init__(
        self,
        engine: Engine,
        *,
        types: Sequence[str],
        config: WorkerConfig,
        running: RunningJobs,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime | None],
        on_grow: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._types = sorted(types)
        self._running = running
        self._metrics = metrics
        self._clock = clock
        self._on_grow = on_grow
        self._interval = config.backlog_interval
        self._next_sample = 0.0
        scale = config.autoscale
        self._autoscaler = Autoscaler(scale) if scale is not None else None
        self.executor = Executor(scale.clamp(config.concurrency) if scale else config.concurrency)
        metrics.concurrency.set(self.executor.size)

    @property
    def size(self) -> int:
        return self.executor.size

    def sample_if_due(self) -> None:
        if time.monotonic() >= self._next_sample:
            self._next_sample = time.monotonic() + self._interval
            self.sample()

    def sample(self) -> int:
        """Count the due backlog, set its gauge, and let the autoscaler resize; the new size."""
        with self._engine.begin() as conn:
            backlog = queries.count_runnable(
                conn, self._types, limit=BACKLOG_COUNT_CAP, now=self._clock()
            )
        size = self.executor.size
        self._metrics.backlog_per_capacity.set(backlog / size)
        if self._autoscaler is None:
            return size
        wanted = self._autoscaler.observe(
            Sample(time.monotonic(), backlog, self._running.take_peak(), size)
        )
        if wanted != size:
            self.executor.resize(wanted)
            self._metrics.concurrency.set(wanted)
            log.info("concurrency changed", extra={"from": size, "to": wanted, "backlog": backlog})
            if wanted > size:
                self._on_grow()  # room to claim into at once
        return wanted
