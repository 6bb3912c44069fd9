"""A Prometheus histogram that takes a batch of observations at once.

``prometheus_client``'s :class:`~prometheus_client.Histogram` takes two locks per value (its sum
and its bucket). The worker's outcome writer observes two histograms for every job it writes,
a hundred jobs a statement, and those locks were the larger part of its per-job cost. This one
counts a batch into plain lists and adds them under one lock; a scrape reads the same series,
with the same buckets, the library's histogram would show (tested side by side).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0


class BatchHistogram(Collector):
    """A histogram named ``name`` with ``labelnames``, observed by :meth:`observe_all`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        if list(buckets) != sorted(buckets):
            raise ValueError(f"{name}: buckets must be in increasing order")
        self._name = name
        self._documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = [*(float(b) for b in buckets if b != math.inf), math.inf]
        # The library's own spelling of ``le``, so series match its histogram's exactly.
        self._les = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        if not self.labelnames:  # as the library's: an unlabelled histogram shows zeros at once
            self._series[()] = _Series(len(self._bounds))
        registry.register(self)

    def observe_all(self, values: Iterable[float], labels: tuple[str, ...] = ()) -> None:
        """Observe each of ``values`` (negative ones as 0) in the series of ``labels``."""
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self._name}: expected labels {self.labelnames}, got {labels}")
        counts = [0] * len(self._bounds)
        total = 0.0
        place = bisect.bisect_left  # a value equal to a bound belongs to that bucket (le)
        bounds = self._bounds
        for value in values:
            value = max(0.0, value)
            counts[place(bounds, value)] += 1
            total += value
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _Series(len(bounds))
            series.counts = [a + b for a, b in zip(series.counts, counts, strict=True)]
            series.total += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(labels, list(s.counts), s.total) for labels, s in self._series.items()]
        for labels, counts, total in snapshot:
            cumulative, running = [], 0
            for le, count in zip(self._les, counts, strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric(list(labels), cumulative, total)
        yield family
