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
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False)
    _progress_writer: ProgressWriter = field(default=_nowhere, repr=False, compare=False)

    def report_progress(self, value: Any) -> bool:
        """Store ``value`` (JSON) in the job's ``progress`` column at once.

        Returns False when the lease is lost (the job was rescued): stop, the result won't count.
        Raises ValueError for a value jsonb cannot store.
        """
        return self._progress_writer(to_json_text(value))
