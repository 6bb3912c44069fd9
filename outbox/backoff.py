"""Retry timing as a pure function of the attempt: ``min(cap, base * 2**(attempt-1))`` plus jitter.

Tenacity computes it, so the job retries (worker) and the relay's broker backoff share one
well-kept implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from tenacity import RetryCallState, wait_exponential_jitter


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff: ``base`` seconds after the first attempt, doubling, capped at ``cap``.

    ``jitter`` adds up to that many seconds at random, so retries of many jobs that failed
    together do not all come back in the same instant.
    """

    base_seconds: float = 1.0
    cap_seconds: float = 3600.0
    jitter_seconds: float = 1.0
    _wait: wait_exponential_jitter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: tenacity caps at ``max`` itself, jitter included.
        wait = wait_exponential_jitter(
            multiplier=self.base_seconds, max=self.cap_seconds, jitter=self.jitter_seconds
        )
        object.__setattr__(self, "_wait", wait)

    def delay(self, attempt: int) -> timedelta:
        """How long to wait after failed attempt number ``attempt`` (1 for the first)."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return timedelta(seconds=self._wait(state))
