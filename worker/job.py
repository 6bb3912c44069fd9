"""The job as a handler sees it: its data, its attempt, and two lines back to the worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
