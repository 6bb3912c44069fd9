"""The OpenAPI document, with what FastAPI cannot infer: bearer security per route (from the
route table), the problem schema every error uses, and the configured batch size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from gateway.problems import Problem
from gateway.route_table import PUBLIC, ROUTE_ACCESS, RouteKey

SECURITY_SCHEME = "bearerAuth"


def openapi_document(
    *, title: str, version: str, description: str, routes: Sequence[BaseRoute], max_batch: int
) -> dict[str, Any]:
    document = get_openapi(title=title, version=version, description=description, routes=routes)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "A token of OUTBOX_GATEWAY_TOKENS; scopes jobs:write, jobs:read, "
            "jobs:admin.",
        }
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            access = ROUTE_ACCESS[RouteKey(method.upper(), path)]
            if access is PUBLIC:
                operation["security"] = []
            else:
                operation["security"] = [{SECURITY_SCHEME: []}]
                note = f"Needs a token with the scope `{access.value}`."
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
    schemas["JobBatch"]["properties"]["jobs"]["maxItems"] = max_batch
    return document
