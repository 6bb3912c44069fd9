"""Every error the gateway answers, in one shape: ``application/problem+json`` (RFC 9457).

``{"type", "title", "status", "detail", "errors": [{"field", "message"}]}``; fields are named
the way callers wrote them (``jobs[3].payload.items[0]``). A 409 for an existing job also carries
``job_ids``. Database outages become 503 with ``Retry-After``; nothing a caller sends should
produce a 500, and one that does still answers in this shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.metrics import GatewayMetrics
from outbox.errors import InvalidJobError, JobConflictError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_FIELD_ERRORS = 50
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class FieldProblem(BaseModel):
    """One bad field: where (``jobs[3].payload``) and what is wrong with it."""

    field: str
    message: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str = Field(description="URN naming the kind of problem.")
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)
    job_ids: list[str] | None = Field(None, description="The jobs a conflict is about.")


class ApiProblem(Exception):
    """Raised by routes to answer with a problem; ``reason`` is the rejection metric's label."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        reason: str | None = None,
        errors: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.reason = reason
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.job_ids = None if job_ids is None else list(job_ids)


def invalid(errors: Sequence[tuple[str, str]]) -> ApiProblem:
    """A 422 naming each bad field."""
    shown = list(errors)[:MAX_FIELD_ERRORS]
    fields = ", ".join(dict.fromkeys(f for f, _ in shown))
    return ApiProblem(
        422, "invalid-request", "Invalid request", f"invalid: {fields}",
        reason="invalid", errors=shown,
    )  # fmt: skip


_DESCRIPTIONS = {
    401: ("No valid bearer token.", "WWW-Authenticate"),
    403: ("The token lacks the route's scope.", "WWW-Authenticate"),
    404: ("No job has this job_id.", None),
    409: ("The job exists with other content, or is in a state the action cannot move.", None),
    413: ("The request body is larger than the limit.", None),
    422: ("A field is invalid; errors[] names each one.", None),
    429: ("The token is over its rate.", "Retry-After"),
    503: ("The job type's backlog is over its bound, or the database is down.", "Retry-After"),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (schema ``Problem``)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, header = _DESCRIPTIONS[status]
        entry: dict[str, Any] = {
            "description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if header is not None:
            entry["headers"] = {header: {"schema": {"type": "string"}}}
        documented[status] = entry
    return documented


def problem_response(problem: ApiProblem) -> JSONResponse:
    body = Problem(
        type=f"urn:outbox:problem:{problem.slug}",
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        errors=[FieldProblem(field=f, message=m) for f, m in problem.errors],
        job_ids=problem.job_ids,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def field_name(loc: Iterable[int | str]) -> str:
    """``("body", "jobs", 3, "payload")`` -> ``jobs[3].payload``."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    name = ""
    for i, part in enumerate(parts):
        if part == "[key]":
            continue
        if i + 1 < len(parts) and parts[i + 1] == "[key]":  # pydantic: (..., key, "[key]")
            name += " (a key)"
        else:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _validation_errors(errors: Sequence[Any]) -> list[tuple[str, str]]:
    found = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "not JSON")
            found.append(("body", f"is not valid JSON: {reason}"))
        else:
            found.append((field_name(error.get("loc", ())), str(error.get("msg", "is invalid"))))
    return found


_STATUS_PROBLEMS: dict[int, tuple[str, str, str | None]] = {
    404: ("not-found", "Not found", "not_found"),
    405: ("method-not-allowed", "Method not allowed", None),
    413: ("too-large", "Request body too large", "too_large"),
}


def install_problem_handlers(app: FastAPI, metrics: GatewayMetrics) -> None:
    """Answer every error raised below the middleware as a problem, counting rejections."""

    def answer(problem: ApiProblem) -> Response:
        if problem.reason is not None:
            metrics.count_rejected(problem.reason)
        return problem_response(problem)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return answer(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return answer(invalid(_validation_errors(exc.errors())))

    async def on_invalid_job(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidJobError)
        return answer(invalid([(exc.field, exc.message)]))

    async def on_conflict(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, JobConflictError)
        return answer(
            ApiProblem(
                409, "job-conflict", "Job exists with other content", str(exc),
                reason="conflict", job_ids=exc.job_ids,
                errors=[("job_id", f"{j!r} exists with other content") for j in exc.job_ids],
            )
        )  # fmt: skip

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body json.loads could not read at all: not UTF-8, or an
            # integer past Python's 4,300 digits. Said like every other unreadable JSON body.
            return answer(invalid([("body", "is not valid JSON (UTF-8) the server can read")]))
        slug, title, reason = _STATUS_PROBLEMS.get(exc.status_code, ("http-error", "Error", None))
        headers = dict(exc.headers or {})
        return answer(
            ApiProblem(
                exc.status_code, slug, title, str(exc.detail), reason=reason, headers=headers
            )
        )

    async def on_database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        return answer(
            ApiProblem(
                503, "unavailable", "Database unavailable", "the database did not answer; retry",
                reason="unavailable", headers={"Retry-After": "1"},
            )
        )  # fmt: skip

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return problem_response(
            ApiProblem(500, "internal-error", "Internal error", "an unexpected error; it is logged")
        )

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidJobError, on_invalid_job)
    app.add_exception_handler(JobConflictError, on_conflict)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(sa.exc.OperationalError, on_database_down)
    app.add_exception_handler(sa.exc.InterfaceError, on_database_down)
    app.add_exception_handler(Exception, on_unexpected)
