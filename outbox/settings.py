"""Settings of every process, from ``OUTBOX_*`` environment variables, validated when built.

Built only in the composition root (the ``outbox`` command); nothing reads them at import time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from outbox.errors import OutboxError

ENV_PREFIX = "OUTBOX_"


class SettingsError(OutboxError):
    """The environment holds a setting that is missing or out of range; names each variable."""


GatewayScope = Literal["jobs:write", "jobs:read", "jobs:admin"]


class GatewayToken(BaseModel):
    """One bearer token of the HTTP gateway, stored as the SHA-256 of the token, never the token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    scopes: Annotated[list[GatewayScope], Field(min_length=1)]


class Settings(BaseSettings):
    """Every ``OUTBOX_*`` setting with its default. The README lists the same table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = Field(
        "postgresql+psycopg://postgres@localhost:5432/outbox",
        description="SQLAlchemy URL of the PostgreSQL database holding the outbox table.",
    )
    broker: Literal["none", "kafka", "redis"] = Field(
        "none", description="Where the relay publishes and the worker reads: kafka, redis or none."
    )
    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers.")
    redis_url: str = Field("redis://localhost:6379/0", description="Redis URL for Streams.")
    default_topic: str = Field(
        "outbox.jobs", description="Topic (Kafka) or stream (Redis) for jobs with no other route."
    )
    topics_by_type: dict[str, str] = Field(
        default_factory=dict, description='Per-type routes as JSON, e.g. {"email.send": "emails"}.'
    )
    kafka_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka settings as JSON (SASL/SSL), passed through to the producer.",
    )
    redis_stream_prefix: str = Field("", description="Prefix of every Redis stream name.")
    redis_maxlen: int = Field(1_000_000, ge=0, description="Approximate stream cap; 0: no trim.")
    relay_batch_size: int = Field(500, ge=1, le=10_000, description="Rows per relay batch.")
    publish_timeout_seconds: float = Field(
        30.0,
        ge=0.1,  # librdkafka refuses a message timeout at or below its 5 ms linger
        description="How long the relay waits for broker acks before retrying a batch.",
    )
    relay_shards: int = Field(
        16, ge=1, le=1024, description="Shards of the key space shared by relays; same on all."
    )
    probe_host: str = Field("0.0.0.0", description="Address of /healthz, /readyz, /metrics.")  # noqa: S104 - probes come from outside the pod
    probe_port: int = Field(
        9100, ge=0, le=65535, description="Port of /healthz, /readyz, /metrics (0: any free one)."
    )
    failpoints: str = Field(
        "", description="Tests only: crash at named places, e.g. relay.after_mark=kill."
    )
    max_attempts: int = Field(5, ge=1, le=1000, description="Attempts before a job is DEAD.")
    retry_base_seconds: float = Field(1.0, gt=0, description="First retry delay (doubles).")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Cap on the retry delay.")
    lease_seconds: float = Field(30.0, gt=0, description="How long a claim holds a job.")
    poll_interval_seconds: float = Field(
        1.0, gt=0, description="Polling fallback when no notification arrives."
    )
    worker_concurrency: int = Field(8, ge=1, le=1000, description="Handler threads per worker.")
    worker_min_concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Fewest handler threads when autoscaling (unset: OUTBOX_WORKER_CONCURRENCY).",
    )
    worker_max_concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        validate_default=True,  # checked against the minimum even when unset
        description="Most handler threads when autoscaling (unset: OUTBOX_WORKER_CONCURRENCY).",
    )
    worker_batch_size: int = Field(
        100, ge=1, le=10_000, description="Most jobs one claim takes (never more than free slots)."
    )
    worker_shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="How long a stopping worker waits for running jobs to finish."
    )
    worker_group: str = Field(
        "outbox-workers",
        min_length=1,
        description="Consumer group of broker-fed workers (Kafka group.id, Redis group): one "
        "group per set of handlers.",
    )
    worker_topics: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description='Topics a broker-fed worker reads, as JSON, e.g. ["emails"]; empty: the '
        "routes of its handlers' types.",
    )
    worker_redis_min_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a Redis entry sits unacked with a silent consumer before another "
        "takes it over.",
    )
    max_attempts_by_type: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict, description='Per-type attempts as JSON, e.g. {"email.send": 10}.'
    )
    rate_limits_by_type: dict[str, str] = Field(
        default_factory=dict,
        description='Per-type rates as JSON, e.g. {"email.send": "10/s", "api": "2/s per key"}.',
    )
    promote_interval_seconds: float = Field(
        1.0, gt=0, description="How often failed jobs whose backoff has passed become PENDING."
    )
    rescue_interval_seconds: float = Field(
        5.0, gt=0, description="How often jobs with an expired lease are taken back."
    )
    prune_interval_seconds: float = Field(60.0, gt=0, description="How often finished rows go.")
    retention_days: float = Field(
        7.0, ge=0, description="Days a finished job is kept before it is pruned; 0 keeps them."
    )
    notify: bool = Field(True, description="Send NOTIFY on enqueue and LISTEN for it.")
    transaction_pooling: bool = Field(
        False,
        description=(
            "The database URL goes through a transaction-pooling proxy (PgBouncer"
            " pool_mode=transaction): keep no session state. Services poll instead of"
            " LISTEN, relays lock shards per transaction, no server-side prepared statements."
        ),
    )
    max_payload_bytes: int = Field(1_048_576, ge=1, description="Largest payload accepted.")
    gateway_host: str = Field("0.0.0.0", description="Address the HTTP gateway listens on.")  # noqa: S104 - served to other pods
    gateway_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP gateway.")
    gateway_tokens: dict[str, GatewayToken] = Field(
        default_factory=dict,
        description='Bearer tokens as JSON: {"name": {"sha256": "<hex>", "scopes": [...]}}.',
    )
    gateway_max_batch: int = Field(500, ge=1, le=10_000, description="Most jobs in one batch.")
    gateway_max_body_bytes: int = Field(
        4_194_304, ge=1024, description="Largest request body the gateway reads (413 above)."
    )
    gateway_max_json_depth: int = Field(
        32, ge=4, le=512, description="Deepest nesting of a request's JSON document (422 above)."
    )
    gateway_rate_limit_per_second: float = Field(
        100.0, ge=0, description="Requests per second per token (token bucket); 0: no limit."
    )
    gateway_rate_limit_burst: int = Field(
        200, ge=1, description="Requests a token may make at once before the rate applies."
    )
    gateway_backlog_limits: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description='Most PENDING+PUBLISHED jobs per type as JSON, "*" for any other type (503).',
    )
    gateway_job_types: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="Known job types as JSON: type -> JSON Schema of its payload, or null.",
    )
    gateway_max_wait_seconds: float = Field(
        30.0, ge=0, le=300, description="Longest long-poll of GET /v1/jobs/{job_id}?wait=."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or JSON.")

    @field_validator("worker_max_concurrency")
    @classmethod
    def _max_not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        fixed = info.data.get("worker_concurrency")
        low = info.data.get("worker_min_concurrency") or fixed
        high = value or fixed
        if low is not None and high is not None and low > high:
            unset = "" if value else f"; unset, it is OUTBOX_WORKER_CONCURRENCY ({fixed})"
            raise ValueError(
                f"{high} is below OUTBOX_WORKER_MIN_CONCURRENCY ({low}){unset}; "
                "the maximum must be at least the minimum"
            )
        return value

    @property
    def worker_concurrency_bounds(self) -> tuple[int, int]:
        """The worker's (minimum, maximum) handler threads; equal (a fixed size) unless set."""
        fixed = self.worker_concurrency
        return (self.worker_min_concurrency or fixed, self.worker_max_concurrency or fixed)

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        # Accept the libpq spelling operators paste from elsewhere; we always drive psycopg 3.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// or postgresql+psycopg:// URL")
        return value


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; raise :class:`SettingsError` naming each bad one."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"{ENV_PREFIX}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        ]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except PydanticSettingsError as exc:
        # A JSON-valued variable that is not JSON fails before validation, naming only the field.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else "a JSON-valued setting"
        raise SettingsError(f"invalid settings: {name}: is not valid JSON") from None
