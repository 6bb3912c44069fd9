"""Trace context through the outbox: captured at enqueue, carried in the job, continued by workers.

The W3C ``traceparent`` (and ``tracestate``) of the span current at enqueue go into the job's
headers; the relay copies a job's headers into the Kafka or Redis message; the worker opens its
span for the handler as a child of that context, so one trace runs from the request that
enqueued a job to the handler that ran it, across processes and hours.

OpenTelemetry is optional (the ``otel`` extra). Without it, or without a tracer provider
configured, nothing is added and the spans are no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

    ENABLED = True
    _NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
except ImportError:  # the optional extra is not installed
    ENABLED = False

TRACEPARENT = "traceparent"


def current_trace_context() -> dict[str, str] | None:
    """The current span's W3C trace context, as headers; None where no span is current."""
    if not ENABLED or not trace.get_current_span().get_span_context().is_valid:
        return None  # the check is cheap; inject is the costly part
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier if TRACEPARENT in carrier else None


def with_trace_context(
    headers: Mapping[str, str] | None, context: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    """The job's headers plus ``context`` (from :func:`current_trace_context`, taken once per
    batch: every job of it has the same), unless they carry a trace context already."""
    if context is None or (headers is not None and TRACEPARENT in headers):
        return headers
    return {**(headers or {}), **context}


@contextmanager
def incoming_context(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the caller's trace context (from HTTP headers) current, unless a span already is.

    With an OpenTelemetry ASGI/FastAPI instrumentation installed its server span is current
    and wins; without one, the job still joins the caller's trace.
    """
    if not ENABLED or trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(headers)))
    try:
        yield
    finally:
        otel_context.detach(token)


_NO_SPAN: AbstractContextManager[object] = nullcontext()


def recording() -> bool:
    """True once a tracer provider is configured: spans would record.

    Asking costs an environment lookup while none is (OpenTelemetry checks for a provider named
    there): the worker asks once per claim round and hands the answer to :func:`job_span`.
    """
    return ENABLED and not isinstance(trace.get_tracer_provider(), _NO_PROVIDER)


def job_span(
    job_type: str,
    job_id: str,
    attempt: int,
    headers: Callable[[], Mapping[str, str]],
    *,
    traced: bool,
) -> AbstractContextManager[object]:
    """The worker's span around one handler call, a child of the context the job carries.

    ``traced`` is :func:`recording` as the claim round that took the job found it: without a
    tracer provider no span would record, and a shared no-op context skips a no-op span's cost
    on every job. ``headers`` gives the job's headers, read only when a span records (a claimed
    job decodes them on first read).

    An exception from the handler passes through, recorded on the span as an error.
    """
    if not traced:
        return _NO_SPAN
    attributes: dict[str, Any] = {
        "messaging.message.id": job_id,
        "outbox.job.type": job_type,
        "outbox.job.attempt": attempt,
    }
    return trace.get_tracer("outbox.worker").start_as_current_span(
        f"process {job_type}",
        context=propagate.extract(dict(headers())),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    )


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids in hex, for log records; None outside a recording span."""
    if not ENABLED:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
