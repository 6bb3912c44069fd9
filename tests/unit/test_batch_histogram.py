"""The batch histogram shows what prometheus_client's own histogram shows for the same values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from outbox.batch_histogram import BatchHistogram

BUCKETS = (0.005, 0.01, 0.5, 1.0, 60.0, 14400.0)
# On a bound (belongs to it), between bounds, zero, negative (counted as 0), past the last bound.
VALUES = [0.005, 0.0051, 0.01, 0.3, 1.0, 0.0, -2.0, 59.999, 60.0, 14400.0, 1e9, 0.5]


def exposition(registry: CollectorRegistry) -> list[str]:
    """Every line but the library's ``_created``, and sums (added in another order) rounded."""
    lines = generate_latest(registry).decode().splitlines()
    return [_rounded(line) for line in lines if "_created" not in line]


def _rounded(line: str) -> str:
    name, _, value = line.rpartition(" ")
    return f"{name} {float(value):.9g}" if name.split("{")[0].endswith("_sum") else line


def test_the_same_values_give_the_same_series_as_the_librarys_histogram() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    library = Histogram("h_seconds", "help", ["type"], buckets=BUCKETS, registry=theirs)
    batched = BatchHistogram("h_seconds", "help", ["type"], buckets=BUCKETS, registry=ours)
    for job_type, values in (("a", VALUES), ("b", VALUES[:3])):
        for value in values:
            library.labels(job_type).observe(max(0.0, value))
        batched.observe_all(values[:5], (job_type,))  # in two batches: they add up
        batched.observe_all(values[5:], (job_type,))

    assert exposition(ours) == exposition(theirs)
    # 0.005 itself, 0.0 and -2.0 (counted as 0)
    assert ours.get_sample_value("h_seconds_bucket", {"type": "a", "le": "0.005"}) == 3
    assert ours.get_sample_value("h_seconds_bucket", {"type": "a", "le": "+Inf"}) == len(VALUES)


def test_an_unlabelled_histogram_shows_zeros_before_any_value() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    Histogram("idle_seconds", "help", buckets=BUCKETS, registry=theirs)
    BatchHistogram("idle_seconds", "help", buckets=BUCKETS, registry=ours)

    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("idle_seconds_count") == 0


def test_labels_that_do_not_match_the_names_are_refused() -> None:
    histogram = BatchHistogram(
        "x_seconds", "help", ["type"], buckets=BUCKETS, registry=CollectorRegistry()
    )
    with pytest.raises(ValueError, match="expected labels"):
        histogram.observe_all([1.0])


def test_buckets_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="increasing order"):
        BatchHistogram("y_seconds", "help", buckets=(1.0, 0.5), registry=CollectorRegistry())
