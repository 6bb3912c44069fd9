"""What each service actually serves, and on which port, taken from the code, not restated.

The gateway's routes come from its app factory; the relay and the worker serve the core's
``probe_app`` (``outbox.cli.services.start_relay_probes`` / ``start_worker_probes``) on
OUTBOX_PROBE_PORT. A manifest or compose healthcheck that names another path or port fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from gateway.http_app import create_app
from outbox.cli import services
from outbox.probe_server import probe_app
from outbox.settings import Settings

SERVICES = ("gateway", "relay", "worker")


@dataclass(frozen=True)
class Served:
    port_setting: str  # the OUTBOX_* variable that moves the port
    default_port: int
    get_paths: frozenset[str]

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.port_setting, self.default_port))


def _get_paths(routes: list[object]) -> frozenset[str]:
    return frozenset(r.path for r in routes if isinstance(r, Route) and "GET" in (r.methods or ()))


def gateway_paths() -> frozenset[str]:
    # An engine connects lazily: building the app touches no database.
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    try:
        return _get_paths(list(create_app(engine, services.gateway_config(Settings())).routes))
    finally:
        engine.dispose()


def probe_paths() -> frozenset[str]:
    app = probe_app(CollectorRegistry(), health=lambda: None, ready=lambda: None)
    return _get_paths(list(app.routes))


def served() -> dict[str, Served]:
    fields = Settings.model_fields  # the defaults, whatever this test's environment holds
    probes = Served("OUTBOX_PROBE_PORT", fields["probe_port"].default, probe_paths())
    return {
        "gateway": Served("OUTBOX_GATEWAY_PORT", fields["gateway_port"].default, gateway_paths()),
        "relay": probes,
        "worker": probes,
    }
