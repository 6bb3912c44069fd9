"""The job as a handler sees it: its data, its attempt, and two lines back to the worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outbox.job_record import ClaimedJob
from worker.json_text import to_json_text

ProgressWriter = Callable[[str], bool]
"""Stores progress (JSON text) under the job's lease; False once the lease is lost."""


def _nowhere(progress_json: str) -> bool:
    return True


_FIRST_USE = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One attempt at a job, handed to its handler.

    ``cancelled`` is set when the worker no longer wants the result: the attempt timed out, its
    lease was lost, or the worker is shutting down past its grace period. A long handler checks
    it between steps; a result returned after it is set is discarded.
    """

    id: int
    job_id: str
    type: str
    payload: Any
    key: str
    attempt: int
    max_attempts: int
    headers: dict[str, str]
    _progress_writer: ProgressWriter = field(default=_nowhere, repr=False, compare=False)

    @classmethod
    def claimed(cls, claimed: ClaimedJob, progress_writer: ProgressWriter = _nowhere) -> Job:
        """The job of a claim, its payload and headers decoded when first read.

        The one claim loop builds a job for every claim: decoding and a frozen dataclass's
        ``__init__`` (a call per field) were a quarter of its time. The handler's thread decodes,
        the one that reads them; the values are those ``json.loads`` gives.
        """
        job = object.__new__(cls)
        job.__dict__.update(
            id=claimed.id, job_id=claimed.job_id, type=claimed.type, key=claimed.key,
            attempt=claimed.attempt, max_attempts=claimed.max_attempts,
            _progress_writer=progress_writer,
            _json={"payload": claimed.payload_json, "headers": claimed.headers_json},
        )  # fmt: skip
        return job

    if not TYPE_CHECKING:  # mypy checks attributes against the fields above

        def __getattr__(self, name: str) -> Any:
            # Reached only for an attribute not set: a claimed job's payload or headers, unread.
            texts = self.__dict__.get("_json")
            if texts is None or name not in texts:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            with _FIRST_USE:  # two threads reading at once get the same object
                if name not in self.__dict__:
                    self.__dict__[name] = json.loads(texts[name])
            return self.__dict__[name]

    @property
    def cancelled(self) -> threading.Event:
        """Set once the worker no longer wants this attempt's result (see the class)."""
        # Made on first use: most jobs never need one, and an Event (a Condition and a lock)
        # was a tenth of the claim loop's time per job. The lock makes the first use race-free.
        event: threading.Event | None = self.__dict__.get("_cancelled")
        if event is None:
            with _FIRST_USE:
                event = self.__dict__.get("_cancelled")
                if event is None:
                    event = threading.Event()
                    object.__setattr__(self, "_cancelled", event)  # frozen: only this lazy slot
        return event

    def report_progress(self, value: Any) -> bool:
        """Store ``value`` (JSON) in the job's ``progress`` column at once.

        Returns False when the lease is lost (the job was rescued): stop, the result won't count.
        Raises ValueError for a value jsonb cannot store.
        """
        return self._progress_writer(to_json_text(value))
