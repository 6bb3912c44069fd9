"""How many jobs a round may claim: free threads, plus those that will be free by the time it
returns (claiming ahead), within three times the concurrency in hand and the batch size.

A worker that claims only into free threads takes turns: it claims, its threads run the jobs,
and only then does it claim again, so every claim's round trip is time the threads stand idle.
When handlers are short next to that round trip, the threads will have finished part of their
jobs before the next claim returns; claiming those jobs ahead keeps them busy. How many, by
Little's law: ``concurrency x claim seconds / handler seconds``, from moving averages of both.
Long handlers make it zero, so a worker busy with slow jobs never holds jobs its threads will not
reach soon, which other workers could run; a job claimed ahead waits for a thread about as long
as one claim takes. Nothing is claimed ahead until a handler has returned.

In hand: at most twice the concurrency running or waiting for a thread (the free threads with
claiming ahead), and one concurrency's worth more whose outcomes are being written. With twice
in all, a worker with short handlers claimed a full batch, then waited for the writer's round
trip to free the slots of the last one (counted in a drain: 344 of 847 rounds found no room):
three times lets the next claim go out while the last outcomes are written (README,
"Benchmarks": 1.14x the drain). What a killed worker leaves to wait out its leases stays
bounded all the same.
"""

from __future__ import annotations

SMOOTHING = 0.2
"""Weight of the newest observation in each moving average."""

IN_HAND_PER_SLOT = 3
"""Jobs a worker may hold per handler slot: running, waiting for a thread, or being written."""


class ClaimPace:
    """Moving averages of the claim round trip and the handler run time, from any thread.

    No lock: every handler's return reports here, and a lock taken per job cost the handler
    threads more than the average is worth. Each average is one attribute, replaced whole (one
    store under the GIL); two threads reporting at once may lose one sample, which a moving
    average does not miss.
    """

    def __init__(self) -> None:
        self._claim_seconds: float | None = None
        self._run_seconds: float | None = None

    def claimed(self, seconds: float) -> None:
        """A full claim took ``seconds`` (one that came back short may have waited for work)."""
        self._claim_seconds = _moved(self._claim_seconds, seconds)

    def ran(self, seconds: float) -> None:
        """A handler returned after ``seconds``."""
        self._run_seconds = _moved(self._run_seconds, seconds)

    def ahead(self, concurrency: int) -> int:
        """Jobs the threads should finish within one claim's round trip (0 until both known)."""
        claim, run = self._claim_seconds, self._run_seconds
        if claim is None or run is None:
            return 0
        if run <= 0:
            return concurrency
        return min(concurrency, int(concurrency * claim / run))


def claim_budget(*, concurrency: int, busy: int, in_hand: int, batch: int, ahead: int) -> int:
    """Jobs one round may claim.

    ``busy``: jobs whose handler has not returned (running, or claimed ahead and waiting for a
    thread); ``in_hand``: those plus the ones whose outcome is not written yet.
    """
    free_threads = concurrency + min(ahead, concurrency) - busy
    return max(0, min(free_threads, IN_HAND_PER_SLOT * concurrency - in_hand, batch))


def _moved(average: float | None, value: float) -> float:
    return value if average is None else average + SMOOTHING * (value - average)
