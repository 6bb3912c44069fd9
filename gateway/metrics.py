"""Every metric of the HTTP gateway, on a registry of the app's own.

Labels stay bounded: routes are path templates (``/v1/jobs/{job_id}``, or ``unmatched``),
statuses are HTTP codes, reasons a fixed set, and job types are capped at ``max_types``
distinct values (the rest count as ``other``) since callers choose them.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

REJECTION_REASONS = frozenset(
    {
        "unauthenticated",
        "forbidden",
        "rate_limited",
        "too_large",
        "invalid",
        "conflict",
        "backlog",
        "not_found",
        "unavailable",
    }
)
OTHER_TYPE = "other"
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """Requests by route and status, their duration, jobs enqueued by type, rejections by reason."""

    def __init__(self, registry: CollectorRegistry, *, max_types: int = 200) -> None:
        self.registry = registry
        self.requests = Counter(
            "outbox_gateway_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "outbox_gateway_request_duration_seconds",
            "Time from a request's arrival to its response (long polls included).",
            ["route", "method"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.enqueued = Counter(
            "outbox_gateway_jobs_enqueued_total",
            "Jobs the gateway added to the outbox (idempotent repeats not counted).",
            ["type"],
            registry=registry,
        )
        self.rejected = Counter(
            "outbox_gateway_rejected_total",
            "Requests refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self._max_types = max_types
        self._types: set[str] = set()
        self._lock = threading.Lock()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def count_enqueued(self, job_type: str, n: int = 1) -> None:
        self.enqueued.labels(self._type_label(job_type)).inc(n)

    def count_rejected(self, reason: str) -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.rejected.labels(reason).inc()

    def _type_label(self, job_type: str) -> str:
        with self._lock:
            if job_type in self._types:
                return job_type
            if len(self._types) < self._max_types:
                self._types.add(job_type)
                return job_type
        return OTHER_TYPE
