"""Per-token request rates: a token bucket for each token name.

Buckets are keyed by the token's name, so their number is bounded by the configured tokens.
They live in the event loop's thread (the edge middleware calls them), so they need no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """``rate`` requests per second per name, up to ``burst`` at once; rate 0 turns it off."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str) -> float:
        """Spend one request of ``name``: 0.0 if allowed, else the seconds until one is."""
        if self._rate == 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.setdefault(name, _Bucket(self._burst, now))
        refill = (now - bucket.updated) * self._rate
        bucket.tokens = min(self._burst, bucket.tokens + refill)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate
