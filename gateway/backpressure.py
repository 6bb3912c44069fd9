"""Backpressure: refuse new jobs of a type whose backlog has passed its bound (HTTP 503).

The backlog of a type is its PENDING and PUBLISHED jobs. Counting it costs a query, so each
figure is cached for ``ttl`` seconds (1 s by default) and jobs accepted meanwhile are added to
the cached figure; the count itself stops at the bound (it only has to tell "over" from "under").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

ANY_TYPE = "*"
"""Key of the bound for every type not named on its own."""

BacklogCounter = Callable[[str, int], int]
"""(type, cap) -> the type's backlog, counted up to cap."""


class BacklogGuard:
    """Tells whether submissions of some types must wait; thread-safe (routes run in threads)."""

    def __init__(
        self,
        bounds: Mapping[str, int],
        count: BacklogCounter,
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bounds = dict(bounds)
        self._count = count
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def bound(self, job_type: str) -> int | None:
        """The most jobs of ``job_type`` allowed to wait, or None when unbounded."""
        return self._bounds.get(job_type, self._bounds.get(ANY_TYPE))

    def over_bound(self, job_types: Mapping[str, int]) -> str | None:
        """The first of ``job_types`` whose backlog has reached its bound, or None."""
        for job_type in sorted(job_types):
            bound = self.bound(job_type)
            if bound is not None and self._backlog(job_type, bound) >= bound:
                return job_type
        return None

    def note_accepted(self, job_types: Mapping[str, int]) -> None:
        """Count jobs just committed into the cached figures, so a burst cannot overshoot far."""
        with self._lock:
            for job_type, n in job_types.items():
                if job_type in self._cached:
                    at, backlog = self._cached[job_type]
                    self._cached[job_type] = (at, backlog + n)

    def _backlog(self, job_type: str, bound: int) -> int:
        now = self._clock()
        with self._lock:
            cached = self._cached.get(job_type)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        backlog = self._count(job_type, bound)  # outside the lock: a query may take a while
        with self._lock:
            self._cached[job_type] = (now, backlog)
        return backlog
