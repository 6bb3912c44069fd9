"""The retry delay, for any policy and any attempt: within ``[exponential, exponential + jitter]``
and never above the cap; without jitter, it never shrinks from one attempt to the next."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outbox.backoff import BackoffPolicy

bases = st.floats(min_value=0.001, max_value=600, allow_nan=False)
caps = st.floats(min_value=0.001, max_value=86_400, allow_nan=False)
jitters = st.floats(min_value=0, max_value=60, allow_nan=False)
attempts = st.integers(min_value=1, max_value=10_000)
TOLERANCE = 1e-6  # float rounding of timedelta (microseconds)


def exponential(base: float, attempt: int) -> float:
    return base * 2.0 ** min(attempt - 1, 1024) if attempt < 1024 else float("inf")


@given(base=bases, cap=caps, jitter=jitters, attempt=attempts)
def test_the_delay_lies_between_the_exponential_and_it_plus_jitter_under_the_cap(
    base: float, cap: float, jitter: float, attempt: int
) -> None:
    delay = BackoffPolicy(base, cap, jitter).delay(attempt).total_seconds()
    low = min(cap, exponential(base, attempt))
    high = min(cap, exponential(base, attempt) + jitter)
    assert 0 <= delay <= cap + TOLERANCE
    assert low - TOLERANCE <= delay <= high + TOLERANCE


@given(base=bases, cap=caps, attempt=attempts)
def test_without_jitter_the_delay_is_fixed_and_never_shrinks(
    base: float, cap: float, attempt: int
) -> None:
    policy = BackoffPolicy(base, cap, jitter_seconds=0)
    assert policy.delay(attempt) == policy.delay(attempt)
    assert policy.delay(attempt + 1) >= policy.delay(attempt)
