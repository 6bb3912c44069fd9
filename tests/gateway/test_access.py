"""Authentication and authorisation: every route x every scope, generated from the app's routes."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gateway import route_table
from gateway.app_context import GatewayConfig
from gateway.auth import Scope, TokenTable, hash_token
from gateway.http_app import create_app
from gateway.route_table import PUBLIC, ROUTE_ACCESS, RouteKey
from tests.gateway.conftest import TOKENS, auth, token_table

OUTBOX = str(Path(sys.executable).parent / "outbox")
CALLERS = [None, "bad-token", "writer", "reader", "admin", "ops"]


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-job", path)


def _headers(caller: str | None) -> dict[str, str]:
    if caller is None:
        return {}
    if caller == "bad-token":
        return {"Authorization": "Bearer not-a-token-we-know"}
    return auth(caller)


def _scopes(caller: str | None) -> set[str]:
    return set(TOKENS[caller][1]) if caller in TOKENS else set()


def test_every_route_of_the_app_has_an_access_decision(client: TestClient) -> None:
    served = route_table.route_keys(client.app.routes)  # type: ignore[attr-defined]
    assert sorted(served) == sorted(ROUTE_ACCESS)
    public = sorted(k.path for k, access in ROUTE_ACCESS.items() if access is PUBLIC)
    assert public == ["/healthz", "/metrics", "/openapi.json", "/readyz"]


def test_every_route_answers_each_caller_as_its_scope_says(client: TestClient) -> None:
    """The matrix: all routes of the app (not of the table) x no token, a bad one, each scope."""
    failures = []
    for key in route_table.route_keys(client.app.routes):  # type: ignore[attr-defined]
        needed = ROUTE_ACCESS[key]
        for caller in CALLERS:
            response = client.request(key.method, _url(key.path), headers=_headers(caller))
            if needed is PUBLIC or needed.value in _scopes(caller):
                expected_ok = response.status_code not in (401, 403, 500)
            elif caller in (None, "bad-token"):
                expected_ok = response.status_code == 401 and response.headers[
                    "www-authenticate"
                ].startswith("Bearer")
            else:
                expected_ok = (
                    response.status_code == 403
                    and needed.value in response.headers["www-authenticate"]
                )
            if not expected_ok:
                failures.append((key, caller, response.status_code))
    assert failures == []


def test_a_route_without_an_access_decision_fails_verification(client: TestClient) -> None:
    app = FastAPI()

    @app.get("/v1/secret")
    def secret() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="/v1/secret"):
        route_table.verify([*client.app.routes, *app.routes])  # type: ignore[attr-defined]


def test_a_table_entry_naming_no_route_fails_verification(client: TestClient) -> None:
    stale = ROUTE_ACCESS | {RouteKey("GET", "/v1/gone"): Scope.READ}
    route_table.verify(client.app.routes)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="/v1/gone"):
        route_table.verify(client.app.routes, stale)  # type: ignore[attr-defined]


def test_a_token_is_known_by_its_hash_only(engine: Engine) -> None:
    secret = "s3cret-token-value"
    table = TokenTable.from_hex(
        {"ci": (hashlib.sha256(secret.encode()).hexdigest(), ["jobs:read"])}
    )
    with TestClient(create_app(engine, GatewayConfig(tokens=table))) as client:
        ok = client.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
        lowercase_scheme = client.get("/v1/jobs", headers={"Authorization": f"bearer {secret}"})
        near = client.get("/v1/jobs", headers={"Authorization": f"Bearer {secret[:-1]}"})
        basic = client.get("/v1/jobs", headers={"Authorization": f"Basic {secret}"})
    assert (ok.status_code, lowercase_scheme.status_code) == (200, 200)
    assert (near.status_code, basic.status_code) == (401, 401)
    assert 'error="invalid_token"' in near.headers["www-authenticate"]


def test_unauthenticated_writes_are_refused_before_the_body_is_read(client: TestClient) -> None:
    # An unknown caller learns nothing about the body's problems (or its size limit).
    response = client.post(
        "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_hash_token_command_matches_sha256_of_stdin() -> None:
    result = subprocess.run([OUTBOX, "gateway", "hash-token"], input="my-token\n",
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hash_token("my-token")
    assert hash_token("my-token") == hashlib.sha256(b"my-token").hexdigest()


def test_hash_token_generate_prints_a_token_and_its_hash() -> None:
    result = subprocess.run([OUTBOX, "gateway", "hash-token", "--generate"], capture_output=True,
                            text=True, timeout=30, check=False)  # fmt: skip
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    token, digest = lines["token"].strip(), lines["sha256"].strip()
    assert len(token) >= 40
    assert digest == hash_token(token)


def test_the_test_tokens_are_configured_by_hash() -> None:
    table = token_table()
    assert len(table) == len(TOKENS)
    assert table.authenticate(f"Bearer {TOKENS['ops'][0]}") is not None
    assert table.authenticate(f"Bearer {hash_token(TOKENS['ops'][0])}") is None
