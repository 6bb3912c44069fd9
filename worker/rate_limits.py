"""Rate limits per job type, or per ordering key within a type: token buckets in this process.

A limit is written ``"10/s"``, ``"600/m"`` or ``"5/h"``, with ``" per key"`` to give each key
its own bucket (``"2/s per key"``: two jobs a second for each customer, say). A bucket holds
one second's worth of tokens (at least one), so a quiet type may burst that much.

The buckets live in the worker process: N workers together allow N times the rate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_SPEC = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)(\s+per\s+key)?")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_KEY_BUCKETS = 10_000


@dataclass(frozen=True)
class RateLimit:
    """So many jobs per second, for the whole type or for each key of it."""

    per_second: float
    per_key: bool = False

    @property
    def burst(self) -> float:
        return max(1.0, self.per_second)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read ``"10/s"``, ``"30/m per key"``...; ValueError says what is accepted."""
        match = _SPEC.fullmatch(text.strip().lower())
        if match is None or float(match[1]) <= 0:
            raise ValueError(
                f"rate limit {text!r} is not like '10/s', '30/m', '5/h' or '2/s per key'"
            )
        seconds = _UNIT_SECONDS[match[2][0]]
        return cls(per_second=float(match[1]) / seconds, per_key=match[3] is not None)


class TokenBucket:
    """Tokens refill at ``rate`` a second up to ``burst``; each job takes one."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def tokens(self, now: float) -> float:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        return self._tokens

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0: one is free now)."""
        return max(0.0, (1.0 - self.tokens(now)) / self._rate)

    def take(self, now: float) -> None:
        self._tokens = self.tokens(now) - 1.0

    def is_full(self, now: float) -> bool:
        return self.tokens(now) >= self._burst


class RateLimiter:
    """The buckets of every limited type (and key). Used by the claiming thread only."""

    def __init__(
        self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        now = clock()
        self._type_buckets = {
            t: TokenBucket(lim.per_second, lim.burst, now)
            for t, lim in self._limits.items()
            if not lim.per_key
        }
        self._key_buckets: dict[tuple[str, str], TokenBucket] = {}

    @property
    def type_limited(self) -> frozenset[str]:
        """Types with one bucket for the whole type (their claims are capped by its tokens)."""
        return frozenset(self._type_buckets)

    def tokens(self, job_type: str) -> float:
        """Tokens the type's own bucket holds now (infinite without a type-wide limit)."""
        bucket = self._type_buckets.get(job_type)
        return float("inf") if bucket is None else bucket.tokens(self._clock())

    def next_token_in(self, job_type: str) -> float:
        bucket = self._type_buckets.get(job_type)
        return 0.0 if bucket is None else bucket.wait(self._clock())

    def acquire(self, job_type: str, key: str) -> float:
        """Take a token for one job: 0 when it may run now, else the seconds until it may.

        Nothing is taken when the answer is not 0; the job is snoozed and asks again later.
        """
        limit = self._limits.get(job_type)
        if limit is None:
            return 0.0
        now = self._clock()
        if limit.per_key:
            bucket = self._key_bucket(job_type, key, limit, now)
        else:
            bucket = self._type_buckets[job_type]
        wait = bucket.wait(now)
        if wait == 0.0:
            bucket.take(now)
        return wait

    def _key_bucket(self, job_type: str, key: str, limit: RateLimit, now: float) -> TokenBucket:
        bucket = self._key_buckets.get((job_type, key))
        if bucket is None:
            if len(self._key_buckets) >= _MAX_KEY_BUCKETS:
                # A full bucket is the same as a new one, so dropping those forgets nothing.
                self._key_buckets = {
                    k: b for k, b in self._key_buckets.items() if not b.is_full(now)
                }
            bucket = TokenBucket(limit.per_second, limit.burst, now)
            self._key_buckets[(job_type, key)] = bucket
        return bucket
