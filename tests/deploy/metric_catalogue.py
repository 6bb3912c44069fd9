"""Every metric the gateway, relay and worker expose, read from their own registries.

The metrics classes are built on fresh registries, as the services build them, so a metric added,
renamed or relabelled in code shows up here and in every test that compares a document (the
metrics table, the alert rules, the dashboard) against it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import gateway.metrics
import relay.metrics
import worker.metrics
from gateway.metrics import REJECTION_REASONS, GatewayMetrics
from outbox.batch_histogram import BatchHistogram
from relay.metrics import RelayMetrics
from worker.metrics import JobOutcome, WorkerMetrics

METRICS_MODULES: tuple[ModuleType, ...] = (gateway.metrics, relay.metrics, worker.metrics)

# Labels whose values the code fixes: a query naming any other value matches nothing, ever.
# The relay's outcomes are two literals in relay_loop._observe (acked if marked, else failed).
CLOSED_LABEL_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("outbox_relay_published_total", "outcome"): frozenset({"acked", "failed"}),
    ("outbox_worker_jobs_total", "outcome"): frozenset(o.value for o in JobOutcome),
    ("outbox_gateway_rejected_total", "reason"): REJECTION_REASONS,
}


@dataclass(frozen=True)
class Metric:
    """One metric as Prometheus stores it: the name queried (a counter's with ``_total``)."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str

    def series(self) -> dict[str, tuple[str, ...]]:
        """The series names a query may select, each with the labels it carries."""
        if self.type == "histogram":
            return {
                self.name + "_bucket": (*self.labels, "le"),
                self.name + "_sum": self.labels,
                self.name + "_count": self.labels,
            }
        return {self.name: self.labels}


def registries() -> list[CollectorRegistry]:
    """The three services' registries, each built the way its service builds it."""
    return [
        GatewayMetrics(CollectorRegistry()).registry,
        RelayMetrics(CollectorRegistry()).registry,
        WorkerMetrics(CollectorRegistry()).registry,
    ]


def exposed_name(family_name: str, family_type: str) -> str:
    # prometheus_client keeps a counter's family name without `_total` and adds it to the sample.
    return family_name + "_total" if family_type == "counter" else family_name


def registry_families() -> dict[str, str]:
    """Name (as queried) to type, of every metric family in the three registries."""
    families: dict[str, str] = {}
    for registry in registries():
        for family in registry.collect():
            name = exposed_name(family.name, family.type)
            assert name not in families, f"{name} is defined by two services"
            families[name] = family.type
    return families


def _wrappers(owner: object) -> Iterator[MetricWrapperBase | BatchHistogram]:
    for value in vars(owner).values():
        if isinstance(value, MetricWrapperBase | BatchHistogram):
            yield value


def _labels(wrapper: MetricWrapperBase | BatchHistogram) -> tuple[str, ...]:
    if isinstance(wrapper, BatchHistogram):
        return wrapper.labelnames
    return tuple(wrapper._labelnames)


def catalogue() -> dict[str, Metric]:
    """Every metric of the three services, with its labels and help text.

    prometheus_client has no public accessor for a metric's label names, so they are read from
    the metric objects the metrics classes hold; the test of this module checks those objects
    are exactly the registries' families.
    """
    owners = (GatewayMetrics(CollectorRegistry()), RelayMetrics(), WorkerMetrics())
    metrics: dict[str, Metric] = {}
    for owner in owners:
        for wrapper in _wrappers(owner):
            family = wrapper.describe()[0]
            name = exposed_name(family.name, family.type)
            labels = _labels(wrapper)
            metrics[name] = Metric(name, family.type, labels, family.documentation)
    return metrics


def series_labels() -> dict[str, tuple[str, ...]]:
    """Every series name a query may select (histograms' ``_bucket/_sum/_count``) to labels."""
    series: dict[str, tuple[str, ...]] = {}
    for metric in catalogue().values():
        series.update(metric.series())
    return series


def series_owner(series: str) -> str:
    """The metric a series belongs to (a histogram's ``_bucket`` belongs to the histogram)."""
    for metric in catalogue().values():
        if series in metric.series():
            return metric.name
    raise KeyError(series)


CONSTRUCTORS = {"Counter", "Gauge", "Histogram", "BatchHistogram", "Summary", "Info", "Enum"}


def declared_names() -> dict[str, str]:
    """Name to constructor (``Counter``, ``Gauge``...), as written in the metrics modules' code."""
    declared: dict[str, str] = {}
    for module in METRICS_MODULES:
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in CONSTRUCTORS:
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{module.__name__}: a non-literal name"
                declared[str(first.value)] = node.func.id.removeprefix("Batch")
    return declared
