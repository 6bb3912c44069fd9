"""Token buckets and the claim plan, on a clock the test moves (no I/O)."""

from __future__ import annotations

import math

import pytest

from worker.claim_plan import ClaimGroup, plan_claims
from worker.rate_limits import RateLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10/s", RateLimit(10.0)),
        ("120/m", RateLimit(2.0)),
        ("1/minute", RateLimit(1 / 60)),
        ("36/h per key", RateLimit(0.01, per_key=True)),
        (" 2.5 / sec ", RateLimit(2.5)),
    ],
)
def test_rate_limits_are_read_from_their_short_form(text: str, limit: RateLimit) -> None:
    assert RateLimit.parse(text) == limit


@pytest.mark.parametrize("text", ["", "10", "0/s", "10/d", "ten/s", "10/s per type"])
def test_a_bad_rate_limit_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="is not like '10/s'"):
        RateLimit.parse(text)


def test_a_bucket_allows_a_burst_then_one_job_per_token() -> None:
    clock = Clock()
    limiter = RateLimiter({"sms": RateLimit(4.0)}, clock)

    assert [limiter.acquire("sms", "k") for _ in range(4)] == [0.0] * 4
    assert limiter.acquire("sms", "k") == pytest.approx(0.25)
    assert limiter.acquire("sms", "k") == pytest.approx(0.25)  # a refusal takes nothing
    clock.t += 0.25
    assert limiter.acquire("sms", "k") == 0.0
    assert limiter.next_token_in("sms") == pytest.approx(0.25)
    clock.t += 10
    assert limiter.tokens("sms") == 4.0  # never more than the burst


def test_per_key_buckets_do_not_hold_each_other_back() -> None:
    clock = Clock()
    limiter = RateLimiter({"api": RateLimit(1.0, per_key=True), "free": RateLimit(1.0)}, clock)

    assert limiter.acquire("api", "a") == 0.0
    assert limiter.acquire("api", "a") == pytest.approx(1.0)
    assert limiter.acquire("api", "b") == 0.0
    assert limiter.type_limited == {"free"}  # per-key types cannot be capped at claim time
    assert limiter.tokens("api") == math.inf
    assert limiter.acquire("unlimited", "a") == 0.0


def test_without_limits_one_claim_takes_every_handled_type_and_only_those() -> None:
    assert plan_claims(handled=["b", "a"], concurrency_limits={}, running={}, tokens={}) == [
        ClaimGroup(("a", "b"), (), math.inf)
    ]


def test_a_worker_without_handlers_claims_nothing() -> None:
    assert plan_claims(handled=[], concurrency_limits={"x": 1}, running={}, tokens={}) == []


def test_limited_types_are_claimed_apart_up_to_their_room_and_left_out_of_the_rest() -> None:
    groups = plan_claims(
        handled=["report", "export", "sms", "fax", "other", "mail"],
        concurrency_limits={"report": 3, "export": 2, "not-handled-here": 1},
        running={"report": 1, "export": 2, "other": 5},
        tokens={"sms": 2.7, "fax": 0.4},
    )
    assert groups == [
        ClaimGroup(("report",), (), 2),  # 3 allowed, 1 running
        ClaimGroup(("sms",), (), 2),  # whole tokens only
        ClaimGroup(("mail", "other"), (), math.inf),
    ]
