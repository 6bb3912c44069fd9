"""The JSON bodies of the HTTP API, as pydantic models (they are also its OpenAPI document).

Bounds here mirror :class:`outbox.new_job.NewJob`'s, so the document tells clients the truth;
``NewJob`` still checks everything again (NUL characters, payload size) before the database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from outbox.job_record import JobRecord
from outbox.new_job import MAX_ATTEMPTS_LIMIT, MAX_ID_LENGTH, MAX_PRIORITY
from outbox.states import JobStatus

# PostgreSQL text refuses NUL; UTF-8 has no lone surrogates. Both can arrive in JSON escapes
# or percent-encoded URLs, so every caller-given string that may reach SQL is checked.
_REFUSED_IN_TEXT = re.compile("[\x00\ud800-\udfff]")


def _clean(value: str) -> str:
    if _REFUSED_IN_TEXT.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


def _no_bool_or_text(value: object) -> object:
    # JSON Schema's "integer" includes 3.0 (kept, as 3) but no true, no "3": refuse those before
    # pydantic's lax conversion would accept them.
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_text(value: object) -> object:
    # pydantic would also read numbers (and numeric text) as Unix timestamps; the document says
    # ISO 8601 date-time, and so does the API.
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time with a time zone")
    return value


def _utc(value: datetime) -> datetime:
    # The same instant in UTC: PostgreSQL refuses offsets past 15:59, Python allows up to 23:59.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1-9999 in UTC") from None


CleanText = Annotated[str, AfterValidator(_clean)]
UtcTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_utc)]
NOT_BOOL_OR_TEXT = BeforeValidator(_no_bool_or_text)
Identifier = Annotated[CleanText, Field(min_length=1, max_length=MAX_ID_LENGTH)]
JobType = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")
]
Topic = Annotated[str, Field(pattern=r"^[A-Za-z0-9._\-]{1,249}$")]
# One flat Annotated each: nested, the bounds reach the JSON Schema as "ge"/"le", not "minimum".
Priority = Annotated[int, Field(ge=0, le=MAX_PRIORITY), NOT_BOOL_OR_TEXT]
MaxAttempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT), NOT_BOOL_OR_TEXT]
HeaderName = Annotated[CleanText, Field(min_length=1)]
BIGINT_MAX = 2**63 - 1


class JobIn(BaseModel):
    """One job to submit."""

    model_config = ConfigDict(extra="forbid")

    type: JobType = Field(description="What kind of work; routes the job to its handler.")
    payload: Any = Field(description="Any JSON value; the handler's input.")
    job_id: Identifier | None = Field(
        None, description="Idempotency key; generated when absent. Same content again: 200."
    )
    key: Identifier | None = Field(None, description="Ordering key; defaults to the job_id.")
    topic: Topic | None = Field(None, description="Broker topic; overrides routing by type.")
    priority: Priority = Field(0, description="Higher runs first.")
    run_at: UtcTime | None = Field(None, description="Not before; ISO 8601 with a zone.")
    max_attempts: MaxAttempts | None = Field(None, description="Default: the worker's policy.")
    headers: dict[HeaderName, CleanText] | None = Field(
        None, description="String headers carried with the message (trace context)."
    )


class JobBatch(BaseModel):
    """Jobs submitted together: one transaction, all or nothing."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[JobIn] = Field(min_length=1, max_length=10_000)


class BatchItem(BaseModel):
    job_id: str
    created: bool = Field(description="False when the job existed already with this content.")


class BatchResult(BaseModel):
    jobs: list[BatchItem]


class JobOut(BaseModel):
    """A job as the gateway shows it."""

    job_id: str
    type: str
    payload: Any
    key: str
    topic: str | None
    priority: int
    status: JobStatus
    attempts: int
    max_attempts: int | None
    run_at: datetime
    last_error: str | None
    progress: Any
    result: Any
    publish_receipt: dict[str, Any] | None
    headers: dict[str, str]
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, record: JobRecord) -> JobOut:
        return cls(**{name: getattr(record, name) for name in cls.model_fields})


class JobPage(BaseModel):
    """Newest first; pass ``next_before_id`` as ``before_id`` for the next page."""

    jobs: list[JobOut]
    next_before_id: int | None


class OperatorAction(BaseModel):
    """Why an operator retries or cancels; written to the audit table."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[CleanText, Field(min_length=1, max_length=1000)]


class ProbeStatus(BaseModel):
    status: str
    reason: str | None = None
