"""What a handler raises to steer its job other than by failing: give up now, or run later."""

from __future__ import annotations

from datetime import timedelta


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job goes to DEAD at once."""


class Retry(Exception):  # named to read as `raise Retry(after=...)`, like dramatiq's Retry
    """Raise from a handler to run the job again after ``after``; the attempt is not counted.

    For "not yet" rather than "failed": a resource that is busy, a result that is not ready.
    """

    def __init__(self, after: timedelta | float, reason: str = "") -> None:
        delay = after if isinstance(after, timedelta) else timedelta(seconds=after)
        if delay < timedelta(0):
            raise ValueError(f"Retry(after=...) must not be negative, got {after!r}")
        super().__init__(reason or f"retry in {delay.total_seconds():g} s")
        self.after = delay
        self.reason = reason
