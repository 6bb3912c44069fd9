"""The HTTP gateway's app factory: FastAPI routes behind the edge (metrics, auth, rate limits)
and the body limit, errors as problems, and the OpenAPI document.

``create_app(engine, config)`` builds a fresh app with a metrics registry of its own; nothing
is created at import time. ``outbox gateway`` serves it with uvicorn.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from gateway import route_table
from gateway.app_context import AppContext, GatewayConfig
from gateway.backpressure import BacklogCounter, BacklogGuard
from gateway.body_limit import BodyLimitMiddleware
from gateway.edge import EdgeMiddleware
from gateway.job_routes import add_job_routes
from gateway.metrics import GatewayMetrics
from gateway.openapi_doc import openapi_document
from gateway.operator_routes import add_operator_routes
from gateway.probe_routes import add_probe_routes
from gateway.problems import install_problem_handlers
from gateway.rate_limit import TokenBuckets
from gateway.strict_query import refuse_unknown_query
from outbox import queries

DESCRIPTION = """Submit jobs to the transactional outbox and follow them.

Every error is `application/problem+json` with `errors[]` naming each bad field."""


class GatewayApp(FastAPI):
    """FastAPI with the gateway's own OpenAPI document."""

    max_batch: int = 500

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = openapi_document(
                title=self.title,
                version=self.version,
                description=self.description,
                routes=self.routes,
                max_batch=self.max_batch,
            )
        return self.openapi_schema


def create_app(
    engine: Engine, config: GatewayConfig, *, registry: CollectorRegistry | None = None
) -> GatewayApp:
    """The gateway on ``engine``; metrics go to ``registry`` (a new one when None)."""
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    backlog = BacklogGuard(
        config.backlog_bounds,
        _backlog_counter(engine),
        ttl=config.backlog_cache_seconds,
        clock=config.clock,
    )
    app = GatewayApp(
        title="outbox gateway",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # the document is served; a UI would pull scripts from a CDN
        redoc_url=None,
        dependencies=[Depends(refuse_unknown_query)],
    )
    app.max_batch = config.max_batch
    app.state.gateway = AppContext(engine, config, metrics, backlog)
    for add_routes in (add_job_routes, add_operator_routes, add_probe_routes):
        add_routes(app)
    route_table.verify(app.routes)
    install_problem_handlers(app, metrics)
    # Added last runs first: the edge (auth before any body is read), then the body limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.max_body_bytes,
        max_depth=config.max_json_depth,
        count_rejected=metrics.count_rejected,
    )
    app.add_middleware(
        EdgeMiddleware,
        routes=app.router.routes,
        tokens=config.tokens,
        buckets=TokenBuckets(config.rate_per_second, config.rate_burst, clock=config.clock),
        metrics=metrics,
    )
    return app


def _backlog_counter(engine: Engine) -> BacklogCounter:
    def count(job_type: str, cap: int) -> int:
        with engine.connect() as conn:
            return queries.count_backlog(conn, job_type, limit=cap)

    return count
