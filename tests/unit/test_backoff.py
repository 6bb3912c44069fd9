from datetime import timedelta

import pytest

from outbox.backoff import BackoffPolicy


def test_delay_doubles_from_the_base_without_jitter() -> None:
    policy = BackoffPolicy(base_seconds=2, cap_seconds=3600, jitter_seconds=0)
    assert [policy.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 16]


def test_delay_never_passes_the_cap_even_with_jitter() -> None:
    policy = BackoffPolicy(base_seconds=1, cap_seconds=60, jitter_seconds=5)
    assert all(policy.delay(n) <= timedelta(seconds=60) for n in range(1, 40))
    assert policy.delay(30) >= timedelta(seconds=55)


def test_jitter_stays_within_its_bound() -> None:
    policy = BackoffPolicy(base_seconds=4, cap_seconds=3600, jitter_seconds=1)
    delays = {policy.delay(3).total_seconds() for _ in range(50)}
    assert all(16 <= d <= 17 for d in delays)
    assert len(delays) > 1


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        BackoffPolicy().delay(0)
