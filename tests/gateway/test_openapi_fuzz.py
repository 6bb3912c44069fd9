"""A bounded schemathesis run against the OpenAPI document: no 500s, and every answer conforms.

Few examples per operation, positive and negative, with a fixed seed, so it takes seconds and
fails the same way twice. Every request carries a token with all three scopes; schemathesis's
own ``ignored_auth`` check also replays requests without it and expects a refusal.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.engine import Engine

from gateway.app_context import GatewayConfig
from gateway.http_app import GatewayApp, create_app
from tests.gateway.conftest import auth, token_table

EXAMPLES_PER_OPERATION = 25
# "Schema-valid data must be accepted" is a heuristic, not conformance: the API refuses, with a
# 422 naming the field, what JSON Schema cannot describe (NUL characters and unpaired surrogates,
# which PostgreSQL refuses, and a body job_id that differs from the Idempotency-Key header).
EXCLUDED_CHECKS = [positive_data_acceptance]


@pytest.fixture(scope="module")
def app(module_engine: Engine) -> GatewayApp:
    # No rate limit (every request would soon be a 429), and short long polls.
    config = GatewayConfig(tokens=token_table(), rate_per_second=0, max_wait_seconds=0.2)
    return create_app(module_engine, config)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    app: GatewayApp, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing to get wrong (the probes take no input)

        @seed(20261201)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=_token_for(case), excluded_checks=EXCLUDED_CHECKS)

        check()


def _token_for(case: schemathesis.Case) -> dict[str, str] | None:
    """A real token in place of the generated one, unless this case spoiled its headers on
    purpose: then they go as generated (a refusal, 401 or 422, is what the check expects)."""
    headers_info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if headers_info is not None and headers_info.mode is GenerationMode.NEGATIVE:
        return None
    return auth("ops")
