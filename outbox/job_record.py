"""Values read back from the outbox table: a whole job, a claimed job, a count of the backlog."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

from outbox.states import JobStatus


@dataclass(frozen=True)
class JobRecord:
    """One row of the outbox table, as operators and the HTTP gateway see it."""

    id: int
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
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    last_traceback: str | None
    headers: dict[str, str]
    result: Any
    progress: Any
    publish_receipt: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobRecord:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["status"] = JobStatus(values["status"])
        return cls(**values)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON values: times as ISO 8601 strings."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


class ClaimedJob(NamedTuple):
    """A job a worker now holds a lease on; ``lease_token`` fences its completion.

    A named tuple, built straight from the claim's row, with the payload and headers still JSON
    text: the one claim loop builds one per job, so it does no per-job work a handler thread can
    do instead (the job's :class:`~worker.job.Job` decodes them when its handler reads them).
    """

    id: int
    job_id: str
    type: str
    payload_json: str
    key: str
    topic: str | None
    attempt: int
    max_attempts: int
    headers_json: str
    lease_token: str  # a uuid, as text: see outbox.schema
    # When the job was published, else created: where the metrics' commit-to-finish starts.
    since: datetime | None = None


class Lease(NamedTuple):
    """What a worker must show to finish a job: the row and the token of its current lease.

    A named tuple: the claim loop makes one per job, at a third of a frozen dataclass's cost.
    """

    id: int
    lease_token: str


@dataclass(frozen=True)
class BacklogStats:
    """Counts per status and the age of the oldest due PENDING job."""

    counts: dict[JobStatus, int]
    oldest_pending_age_seconds: float | None
