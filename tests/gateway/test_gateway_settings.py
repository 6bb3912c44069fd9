"""The gateway's settings: validated when built, each problem one line naming the variable."""

from __future__ import annotations

import json

import pytest

from gateway.auth import Scope, hash_token
from outbox.cli.services import gateway_config
from outbox.settings import SettingsError, load_settings


def test_gateway_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OUTBOX_GATEWAY_PORT", "OUTBOX_GATEWAY_TOKENS", "OUTBOX_GATEWAY_MAX_BATCH"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.gateway_port, settings.gateway_tokens, settings.gateway_max_batch) == (
        8080, {}, 500,
    )  # fmt: skip


def test_tokens_come_hashed_from_json_and_become_a_token_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = {"deploy-bot": {"sha256": hash_token("t0k").upper(), "scopes": ["jobs:write"]}}
    monkeypatch.setenv("OUTBOX_GATEWAY_TOKENS", json.dumps(tokens))
    monkeypatch.setenv("OUTBOX_GATEWAY_BACKLOG_LIMITS", '{"email.send": 1000, "*": 50000}')
    config = gateway_config(load_settings())
    principal = config.tokens.authenticate("Bearer t0k")
    assert principal is not None
    assert (principal.name, principal.scopes) == ("deploy-bot", frozenset({Scope.WRITE}))
    assert config.backlog_bounds == {"email.send": 1000, "*": 50000}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OUTBOX_GATEWAY_TOKENS", "{nope", "not valid JSON"),
        ("OUTBOX_GATEWAY_TOKENS", '{"a": {"sha256": "abc", "scopes": ["jobs:read"]}}', "pattern"),
        ("OUTBOX_GATEWAY_TOKENS", f'{{"a": {{"sha256": "{"0" * 64}", "scopes": ["root"]}}}}',
         "jobs:write"),
        ("OUTBOX_GATEWAY_PORT", "70000", "65535"),
        ("OUTBOX_GATEWAY_BACKLOG_LIMITS", '{"t": 0}', "greater than or equal to 1"),
        ("OUTBOX_GATEWAY_MAX_WAIT_SECONDS", "-1", "greater than or equal to 0"),
    ],
)  # fmt: skip
def test_a_bad_gateway_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as caught:
        load_settings()
    assert says in str(caught.value)


def test_a_job_type_schema_that_is_no_json_schema_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOX_GATEWAY_JOB_TYPES", '{"seat.hold": {"type": "seats"}, "t": null}')
    with pytest.raises(SettingsError, match=r"OUTBOX_GATEWAY_JOB_TYPES.*seat\.hold"):
        gateway_config(load_settings())
