"""Errors the core raises. Vendor exceptions never leak past a module boundary as themselves."""

from __future__ import annotations


class OutboxError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidJobError(OutboxError, ValueError):
    """A job was refused before the database was touched; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobConflictError(OutboxError):
    """A ``job_id`` already exists with other content (type, payload, key or topic)."""

    def __init__(self, job_ids: list[str]) -> None:
        shown = ", ".join(job_ids[:10]) + (" ..." if len(job_ids) > 10 else "")
        super().__init__(f"job_id already exists with different content: {shown}")
        self.job_ids = job_ids


class JobNotFoundError(OutboxError, LookupError):
    """No job has this ``job_id``."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with job_id {job_id!r}")
        self.job_id = job_id
