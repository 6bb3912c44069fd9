"""The small HTTP port of the relay and the worker: ``/healthz``, ``/readyz`` and ``/metrics``.

Kubernetes restarts a process whose ``/healthz`` fails (its loop stalled) and stops routing
to one whose ``/readyz`` fails (database unreachable or schema not at the migration head).
Prometheus scrapes ``/metrics``. Starlette on uvicorn, in a daemon thread beside the loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from outbox.migrations_runner import serves_this_code

log = logging.getLogger(__name__)

Check = Callable[[], str | None]
"""A probe: None when fine, else the reason it is not."""


def probe_app(registry: CollectorRegistry, *, health: Check, ready: Check) -> Starlette:
    """The ASGI app; the checks run in a thread pool, so a slow database never blocks the loop."""

    def answer(check: Check) -> Response:
        reason = check()
        if reason is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failing", "reason": reason}, status_code=503)

    def healthz(request: Request) -> Response:
        return answer(health)

    def readyz(request: Request) -> Response:
        return answer(ready)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


def schema_readiness(engine: Engine) -> Check:
    """Ready when the database answers and its schema is at this code's newest migration or
    past it (a newer release migrated first; expand-then-contract keeps this code working)."""

    def check() -> str | None:
        try:
            with engine.connect() as conn:
                if not serves_this_code(conn):
                    return "database schema is not at the migration head; run: outbox migrate"
        except Exception as exc:
            return f"database unreachable: {type(exc).__name__}"
        return None

    return check


class ProbeServer:
    """Serves :func:`probe_app` on ``host:port`` (port 0: any free one) until :meth:`stop`."""

    def __init__(self, app: Starlette, *, host: str = "0.0.0.0", port: int = 0) -> None:  # noqa: S104 - probes come from outside the pod
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="probe-server", daemon=True)
        self.port: int | None = None
        """The port bound, once started."""

    def start(self, timeout: float = 10.0) -> int:
        """Start serving; return the port bound."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        # uvicorn offers a flag, not an event, for "listening"; poll it with a deadline.
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError("the probe server did not start (is the port in use?)")
            time.sleep(0.01)
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        log.info("probe server listening", extra={"port": port})
        self.port = port
        return port

    def _serve(self) -> None:
        # uvicorn calls sys.exit when it cannot bind; start() reports that as OSError.
        with contextlib.suppress(SystemExit):
            self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
