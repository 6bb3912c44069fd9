"""The gateway's edge, before any body is read: route, measure, authenticate, authorise, limit.

A pure ASGI middleware, so an unknown caller is turned away (401), a caller without the route's
scope too (403), and a caller over its rate (429) before the request body is even read. The
route is found the way the router will find it, and its access decision comes from the one
route table (:mod:`gateway.route_table`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from gateway.auth import Principal, TokenTable
from gateway.metrics import GatewayMetrics
from gateway.problems import ApiProblem, problem_response
from gateway.rate_limit import TokenBuckets
from gateway.route_table import PUBLIC, ROUTE_ACCESS, RouteKey, resolve

UNMATCHED_ROUTE = "unmatched"
PRINCIPAL_STATE_KEY = "principal"
_REALM = 'Bearer realm="outbox"'


class EdgeMiddleware:
    """Metrics for every request; auth and the per-token rate for every non-public route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        tokens: TokenTable,
        buckets: TokenBuckets,
        metrics: GatewayMetrics,
    ) -> None:
        self.app = app
        self._routes = routes
        self._tokens = tokens
        self._buckets = buckets
        self._metrics = metrics

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        key = resolve(self._routes, scope)
        status = 500  # what the client sees if nothing answers (the server error middleware)

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, key)
            if refusal is None:
                await self.app(scope, receive, send_noting_status)
            else:
                if refusal.reason is not None:
                    self._metrics.count_rejected(refusal.reason)
                await problem_response(refusal)(scope, receive, send_noting_status)
        finally:
            route = key.path if key is not None else UNMATCHED_ROUTE
            elapsed = time.perf_counter() - started
            self._metrics.observe_request(route, scope["method"], status, elapsed)

    def _refusal(self, scope: AsgiScope, key: RouteKey | None) -> ApiProblem | None:
        if key is None:
            return None  # the router answers 404 or 405
        needed = ROUTE_ACCESS[key]
        if needed is PUBLIC:
            return None
        authorization = Headers(scope=scope).get("authorization")
        principal = self._tokens.authenticate(authorization)
        if principal is None:
            challenge = _REALM if authorization is None else f'{_REALM}, error="invalid_token"'
            return ApiProblem(
                401, "unauthenticated", "Unauthenticated",
                "send Authorization: Bearer <token> with a token this gateway knows",
                reason="unauthenticated", headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        if needed not in principal.scopes:
            challenge = f'{_REALM}, error="insufficient_scope", scope="{needed.value}"'
            return ApiProblem(
                403, "forbidden", "Forbidden", f"this route needs the scope {needed.value}",
                reason="forbidden", headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        wait = self._buckets.take(principal.name)
        if wait > 0:
            return ApiProblem(
                429, "rate-limited", "Too many requests",
                f"token {principal.name!r} is over its rate; retry after the given seconds",
                reason="rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )  # fmt: skip
        _remember(scope, principal)
        return None


def _remember(scope: AsgiScope, principal: Principal) -> None:
    # request.state reads scope["state"]; routes find the caller there.
    scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
