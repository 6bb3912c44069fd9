"""What the gateway's routes share: its configuration, engine, metrics and backlog guard.

The composition root builds a :class:`GatewayConfig` from settings; tests build one directly
(with a fake clock, caching off, small limits). Routes reach the :class:`AppContext` through
FastAPI dependencies, never through module globals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from gateway.auth import Principal, TokenTable
from gateway.backpressure import BacklogGuard
from gateway.edge import PRINCIPAL_STATE_KEY
from gateway.job_types import JobTypeRegistry
from gateway.metrics import GatewayMetrics
from outbox.new_job import EnqueueLimits


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the HTTP gateway is told; the README's settings table gives the defaults."""

    tokens: TokenTable
    max_batch: int = 500
    max_body_bytes: int = 4_194_304
    max_json_depth: int = 32
    rate_per_second: float = 100.0
    rate_burst: int = 200
    backlog_bounds: Mapping[str, int] = field(default_factory=dict)
    job_types: JobTypeRegistry = field(default_factory=lambda: JobTypeRegistry({}))
    max_wait_seconds: float = 30.0
    limits: EnqueueLimits = field(default_factory=EnqueueLimits)
    notify: bool = True
    backlog_cache_seconds: float = 1.0
    backlog_retry_after_seconds: int = 5
    first_poll_interval: float = 0.05
    """A long poll rereads the job after this long, doubling up to ``max_poll_interval``."""
    max_poll_interval: float = 0.5
    clock: Callable[[], float] = time.monotonic
    """Clock of the rate limits and of the backlog cache; tests pass a fake one."""


@dataclass(frozen=True)
class AppContext:
    engine: Engine
    config: GatewayConfig
    metrics: GatewayMetrics
    backlog: BacklogGuard


def app_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.gateway
    return context


def caller(request: Request) -> Principal:
    """The authenticated caller; the edge middleware put it there (public routes have none)."""
    principal: Principal = getattr(request.state, PRINCIPAL_STATE_KEY)
    return principal


Context = Annotated[AppContext, Depends(app_context)]
Caller = Annotated[Principal, Depends(caller)]
