"""Settings of every process, from ``OUTBOX_*`` environment variables, validated when built.

Built only in the composition root (the ``outbox`` command); nothing reads them at import time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.errors import OutboxError

ENV_PREFIX = "OUTBOX_"


class SettingsError(OutboxError):
    """The environment holds a setting that is missing or out of range; names each variable."""


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
        30.0, gt=0, description="How long the relay waits for broker acks before retrying a batch."
    )
    max_attempts: int = Field(5, ge=1, le=1000, description="Attempts before a job is DEAD.")
    retry_base_seconds: float = Field(1.0, gt=0, description="First retry delay (doubles).")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Cap on the retry delay.")
    lease_seconds: float = Field(30.0, gt=0, description="How long a claim holds a job.")
    poll_interval_seconds: float = Field(
        1.0, gt=0, description="Polling fallback when no notification arrives."
    )
    notify: bool = Field(True, description="Send NOTIFY on enqueue (off behind PgBouncer).")
    max_payload_bytes: int = Field(1_048_576, ge=1, description="Largest payload accepted.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or JSON.")

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
