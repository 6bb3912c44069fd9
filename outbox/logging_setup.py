"""Process-wide logging: stdlib ``logging``, fixed messages, context in fields; text or JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

from outbox import tracing

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _RESERVED}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_NO_FIELDS: Mapping[str, object] = MappingProxyType({})
_job_fields: ContextVar[Mapping[str, object]] = ContextVar("outbox_job_fields", default=_NO_FIELDS)


class JobFields:
    """Adds these fields (job_id, type, attempt) to every record logged inside, e.g. by a handler.

    A class rather than a generator context manager: it wraps every handler call, and costs a
    third as much.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: object) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        outer = _job_fields.get()  # in a handler's thread: none, so nothing to merge
        self._token = _job_fields.set({**outer, **self._fields} if outer else self._fields)

    def __exit__(self, *exc_info: object) -> None:
        _job_fields.reset(self._token)


class JobContextFilter(logging.Filter):
    """Puts the current job's fields and the current trace and span ids on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _job_fields.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        ids = tracing.current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Send log records to stderr as text or JSON lines, with job and trace fields."""
    handler = logging.StreamHandler()
    handler.addFilter(JobContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Alembic logs each step at INFO; that is what an operator running migrate wants to see.
    logging.getLogger("alembic").setLevel(level)
