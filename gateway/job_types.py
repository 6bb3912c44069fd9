"""The registry of job types the gateway accepts, each with an optional JSON Schema of its payload.

Empty, it accepts any well-formed type. Configured, it refuses a type it does not list (422
naming ``type``) and a payload its schema refuses (422 naming the payload's field, such as
``payload.seat_ids[1]``). Schemas are checked when the registry is built, so a bad one stops
the gateway at start, not at the first request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

MAX_ERRORS_PER_JOB = 10
MAX_MESSAGE_CHARS = 300


class JobTypeRegistry:
    """type -> payload validator (None: any payload)."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Any] | None]) -> None:
        self._validators: dict[str, Any] = {}
        for job_type, schema in schemas.items():
            self._validators[job_type] = None if schema is None else _validator(job_type, schema)

    @property
    def restricted(self) -> bool:
        """Whether only the listed types are accepted."""
        return bool(self._validators)

    @property
    def types(self) -> list[str]:
        return sorted(self._validators)

    def problems(self, job_type: str, payload: Any, prefix: str = "") -> list[tuple[str, str]]:
        """(field, message) for each reason to refuse this job; empty when it is welcome."""
        if not self.restricted:
            return []
        if job_type not in self._validators:
            known = ", ".join(self.types[:20])
            return [(f"{prefix}type", f"unknown job type {job_type!r}; known types: {known}")]
        validator = self._validators[job_type]
        if validator is None:
            return []
        errors = sorted(validator.iter_errors(payload), key=lambda e: _path(e.absolute_path))
        return [
            (f"{prefix}payload{_path(e.absolute_path)}", _short(e.message))
            for e in errors[:MAX_ERRORS_PER_JOB]
        ]


def _validator(job_type: str, schema: Mapping[str, Any]) -> Any:
    schema = dict(schema)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"the schema of job type {job_type!r} is invalid: {exc.message}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _path(parts: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _short(message: str) -> str:
    # jsonschema quotes the offending value, which may be the whole payload.
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 3] + "..."
