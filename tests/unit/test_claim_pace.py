"""How many jobs a claim round may take: free threads, plus the jobs short handlers will have
finished by the time the claim returns, within three times the concurrency in hand and the batch."""

from __future__ import annotations

import threading

import pytest

from worker.claim_pace import ClaimPace, claim_budget


def paced(claim_seconds: float, run_seconds: float) -> ClaimPace:
    pace = ClaimPace()
    pace.claimed(claim_seconds)
    pace.ran(run_seconds)
    return pace


def test_nothing_is_claimed_ahead_until_both_a_claim_and_a_handler_were_timed() -> None:
    pace = ClaimPace()
    assert pace.ahead(10) == 0
    pace.claimed(0.005)
    assert pace.ahead(10) == 0
    pace.ran(0.0001)
    assert pace.ahead(10) == 10


@pytest.mark.parametrize(
    ("claim_seconds", "run_seconds", "ahead"),
    [
        (0.005, 0.0001, 100),  # no-op handlers: a whole concurrency's worth, no more
        (0.005, 0.010, 50),  # half the threads free up while a claim is out
        (0.005, 0.5, 1),
        (0.005, 2.0, 0),  # slow handlers: nothing taken that the threads will not reach soon
        (0.005, 0.0, 100),
    ],
)
def test_ahead_is_the_jobs_the_threads_finish_within_one_claim(
    claim_seconds: float, run_seconds: float, ahead: int
) -> None:
    assert paced(claim_seconds, run_seconds).ahead(100) == ahead


def test_the_averages_move_a_fifth_of_the_way_to_each_new_observation() -> None:
    pace = paced(0.010, 0.100)  # ahead 10 of 100
    pace.ran(0.600)  # the run average moves to 0.2
    assert pace.ahead(100) == 5
    pace.claimed(0.060)  # the claim average moves to 0.02
    assert pace.ahead(100) == 10


@pytest.mark.parametrize(
    ("busy", "in_hand", "batch", "ahead", "budget"),
    [
        (0, 0, 100, 0, 10),  # free threads only
        (10, 10, 100, 0, 0),  # all busy, nothing ahead: wait
        (10, 10, 100, 10, 10),  # all busy, short handlers: the next round's worth
        (10, 10, 100, 50, 10),  # ahead is capped at the concurrency
        (15, 15, 100, 10, 5),  # five already waiting for a thread
        (10, 28, 100, 10, 2),  # 18 outcomes not yet written: in hand caps it at 30
        (0, 30, 100, 10, 0),
        (0, 20, 100, 10, 10),  # 20 being written, threads all free: room for 10 more
        (0, 0, 4, 10, 4),  # the batch size caps every round
        (25, 25, 100, 10, 0),  # never negative
    ],
)
def test_budget(busy: int, in_hand: int, batch: int, ahead: int, budget: int) -> None:
    found = claim_budget(concurrency=10, busy=busy, in_hand=in_hand, batch=batch, ahead=ahead)
    assert found == budget


def test_handlers_returning_on_many_threads_at_once_keep_the_average_among_their_times() -> None:
    pace = ClaimPace()
    pace.claimed(0.001)
    go = threading.Barrier(8)

    def report(run_seconds: float) -> None:
        go.wait(10)
        for _ in range(2_000):
            pace.ran(run_seconds)

    threads = [threading.Thread(target=report, args=(0.002 + 0.0002 * n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every time reported was 2.0-3.4 ms, so the average is too: 100 x 1 ms / 3.4-2.0 ms.
    assert 29 <= pace.ahead(100) <= 50
