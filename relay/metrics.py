"""The relay's Prometheus metrics, on a registry of its own (several relays can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Publishing a batch spans milliseconds (Redis, a warm Kafka) to the publish timeout.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From the enqueuing transaction (or run_at) to the broker's ack: NOTIFY makes it milliseconds.
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class RelayMetrics:
    """Every relay metric; names and labels are listed in docs/metrics.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.published = Counter(
            "outbox_relay_published_total",
            "Messages the relay tried to publish, by topic and outcome (acked or failed).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.batch_duration = Histogram(
            "outbox_relay_batch_duration_seconds",
            "Time to fetch, publish, mark and commit one batch.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_to_publish = Histogram(
            "outbox_relay_commit_to_publish_seconds",
            "From the job's enqueue (or its run_at, if later) to the commit of its PUBLISHED mark.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.oldest_pending_age = Gauge(
            "outbox_relay_oldest_pending_age_seconds",
            "Age of the oldest committed, due PENDING job (0: none).",
            registry=self.registry,
        )
        self.horizon_delay = Gauge(
            "outbox_relay_horizon_delay_seconds",
            "How long the oldest due job has been held back by a still-open older transaction.",
            registry=self.registry,
        )
        self.shards_owned = Gauge(
            "outbox_relay_shards_owned",
            "Shards of the key space this relay publishes.",
            registry=self.registry,
        )
        self.loop_heartbeat = Gauge(
            "outbox_relay_last_loop_timestamp_seconds",
            "Unix time the relay loop last went round; /healthz fails when it stalls.",
            registry=self.registry,
        )
