from __future__ import annotations

import pytest

from outbox.settings import SettingsError, load_settings


def test_defaults_match_the_documented_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OUTBOX_BROKER", "OUTBOX_MAX_ATTEMPTS", "OUTBOX_RETRY_MAX_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.broker, settings.max_attempts, settings.retry_max_seconds) == ("none", 5, 3600)


def test_settings_come_from_outbox_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_BROKER", "kafka")
    monkeypatch.setenv("OUTBOX_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("OUTBOX_NOTIFY", "false")
    settings = load_settings()
    assert (settings.broker, settings.lease_seconds, settings.notify) == ("kafka", 12.5, False)


def test_a_libpq_url_is_driven_by_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://u:p@db:5432/app")
    assert load_settings().database_url == "postgresql+psycopg://u:p@db:5432/app"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OUTBOX_BROKER", "rabbitmq"),
        ("OUTBOX_MAX_ATTEMPTS", "0"),
        ("OUTBOX_LEASE_SECONDS", "soon"),
        ("OUTBOX_DATABASE_URL", "mysql://x"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()
