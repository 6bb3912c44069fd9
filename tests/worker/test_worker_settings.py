"""The worker's settings: read from OUTBOX_* variables, validated, and documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox.cli.services import build_source
from outbox.settings import Settings, SettingsError, load_settings
from worker import HandlerRegistry
from worker.kafka_source import KafkaSource
from worker.redis_source import RedisSource
from worker.source import JobSource

README = Path(__file__).resolve().parents[2] / "README.md"
WORKER_SETTINGS = [
    "worker_concurrency", "worker_batch_size", "worker_shutdown_grace_seconds",
    "max_attempts_by_type", "rate_limits_by_type", "promote_interval_seconds",
    "rescue_interval_seconds", "prune_interval_seconds", "retention_days", "worker_group",
    "worker_topics", "worker_redis_min_idle_seconds",
]  # fmt: skip


@pytest.mark.parametrize("name", WORKER_SETTINGS)
def test_each_worker_setting_is_in_the_readme_table_with_its_default(name: str) -> None:
    row = re.search(rf"^\| `OUTBOX_{name.upper()}` \| `([^`]*)` \|", README.read_text(), re.M)
    assert row is not None, f"OUTBOX_{name.upper()} missing from the README settings table"
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    documented = row[1]
    assert documented in (str(default), f"{default:g}" if isinstance(default, float) else "")


def test_per_type_maps_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_MAX_ATTEMPTS_BY_TYPE", '{"email.send": 10}')
    monkeypatch.setenv("OUTBOX_RATE_LIMITS_BY_TYPE", '{"api.call": "2/s per key"}')
    settings = load_settings()
    assert settings.max_attempts_by_type == {"email.send": 10}
    assert settings.rate_limits_by_type == {"api.call": "2/s per key"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OUTBOX_MAX_ATTEMPTS_BY_TYPE", '{"email.send": 0}'),
        ("OUTBOX_WORKER_CONCURRENCY", "0"),
        ("OUTBOX_RETENTION_DAYS", "-1"),
        ("OUTBOX_WORKER_GROUP", ""),
        ("OUTBOX_WORKER_TOPICS", '[""]'),
        ("OUTBOX_WORKER_REDIS_MIN_IDLE_SECONDS", "0"),
    ],
)
def test_a_bad_worker_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_a_broker_fed_worker_reads_the_routes_of_its_types_unless_told_its_topics() -> None:
    registry = HandlerRegistry()
    for job_type in ("email.send", "email.bounce", "report.build"):
        registry.handler(job_type)(lambda job: None)
    routes = {"email.send": "emails", "email.bounce": "emails", "invoice.create": "billing"}
    engine = sa.create_engine("postgresql+psycopg://nobody@localhost/none")  # never connects

    def source(**overrides: object) -> JobSource | None:
        settings = load_settings(topics_by_type=routes, redis_stream_prefix="p:", **overrides)
        return build_source(settings, engine, registry, "w1")

    assert source(broker="none") is None
    redis_source = source(broker="redis")
    assert isinstance(redis_source, RedisSource)
    assert redis_source.streams == ["p:emails", "p:outbox.jobs"]  # not billing: no handler here
    kafka_source = source(broker="kafka", worker_topics=["emails"])
    assert isinstance(kafka_source, KafkaSource)
    assert kafka_source.topics == ["emails"]
