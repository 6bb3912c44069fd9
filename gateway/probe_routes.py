"""Public routes for the platform: ``/healthz`` (the process answers), ``/readyz`` (the database
answers and its schema is at or past the migration head), ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from enum import Enum

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gateway.api_models import ProbeStatus
from gateway.app_context import Context
from outbox.probe_server import schema_readiness

TAGS: list[str | Enum] = ["probes"]


def add_probe_routes(router: FastAPI) -> None:
    """Register these routes on the app (directly: the route table checks ``app.routes``)."""

    @router.get("/healthz", tags=TAGS)
    def healthz() -> ProbeStatus:
        """Liveness: the process serves requests."""
        return ProbeStatus(status="ok")

    @router.get(
        "/readyz",
        tags=TAGS,
        responses={
            200: {"model": ProbeStatus, "description": "Ready."},
            503: {"model": ProbeStatus, "description": "Not ready; reason says why."},
        },
    )
    def readyz(context: Context) -> Response:
        """Readiness: the database answers and its schema is at the newest migration."""
        reason = schema_readiness(context.engine)()
        if reason is None:
            return JSONResponse(ProbeStatus(status="ok").model_dump())
        failing = ProbeStatus(status="failing", reason=reason)
        return JSONResponse(failing.model_dump(), status_code=503)

    @router.get(
        "/metrics",
        tags=TAGS,
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics(context: Context) -> Response:
        """Prometheus metrics of this gateway process."""
        registry = context.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
