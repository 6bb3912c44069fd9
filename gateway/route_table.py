"""Who may call what: the one table that gives every route of the gateway its access decision.

A route the table does not name makes :func:`verify` (called by the app factory) refuse to build
the app, and the route-by-scope test in ``tests/gateway`` is generated from the app's own route
list: adding a route means deciding its scope here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import NamedTuple

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope as AsgiScope

from gateway.auth import Scope


class Public(Enum):
    """Open to anyone: probes, metrics and the API description."""

    PUBLIC = "public"


PUBLIC = Public.PUBLIC
Access = Scope | Public


class RouteKey(NamedTuple):
    """A route as the table names it: HTTP method and path template (``/v1/jobs/{job_id}``)."""

    method: str
    path: str


ROUTE_ACCESS: dict[RouteKey, Access] = {
    RouteKey("POST", "/v1/jobs"): Scope.WRITE,
    RouteKey("POST", "/v1/jobs:batch"): Scope.WRITE,
    RouteKey("GET", "/v1/jobs"): Scope.READ,
    RouteKey("GET", "/v1/jobs/{job_id}"): Scope.READ,
    RouteKey("POST", "/v1/jobs/{job_id}/retry"): Scope.ADMIN,
    RouteKey("POST", "/v1/jobs/{job_id}/cancel"): Scope.ADMIN,
    RouteKey("GET", "/healthz"): PUBLIC,
    RouteKey("GET", "/readyz"): PUBLIC,
    RouteKey("GET", "/metrics"): PUBLIC,
    RouteKey("GET", "/openapi.json"): PUBLIC,
}


def route_keys(routes: Sequence[BaseRoute]) -> list[RouteKey]:
    """Every (method, path template) the routes serve; HEAD is GET's shadow, not a route."""
    keys: list[RouteKey] = []
    for route in routes:
        if isinstance(route, Route):
            methods = set(route.methods or ()) - {"HEAD"} or {"GET"}
            keys.extend(RouteKey(m, route.path_format) for m in sorted(methods))
    return keys


def verify(routes: Sequence[BaseRoute], table: Mapping[RouteKey, Access] = ROUTE_ACCESS) -> None:
    """Raise RuntimeError unless the table and the routes name exactly the same routes."""
    served = set(route_keys(routes))
    undecided = sorted(served - table.keys())
    stale = sorted(table.keys() - served)
    if undecided or stale:
        raise RuntimeError(
            f"gateway route table out of date: routes without an access decision {undecided}, "
            f"entries naming no route {stale} (edit gateway/route_table.py)"
        )


def resolve(routes: Sequence[BaseRoute], scope: AsgiScope) -> RouteKey | None:
    """The table's key for the route this request will reach, or None (404 or 405 follows)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL and isinstance(route, Route):
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            return RouteKey(method, route.path_format)
    return None
