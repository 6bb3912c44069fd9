"""Pacing of bulk operator commands: at most a given number of rows per second, on average."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Sleeps after each batch until the rows handled so far are due at ``rate`` rows per second.

    A bulk command on a busy table should not take all of the database's capacity: with the
    default 1000 rows/s and batches of 500, it rests about half a second between batches if the
    batches themselves are quick. The wait is a plain sleep, never a busy loop.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._rows = 0

    def batch_size(self, wanted: int) -> int:
        """``wanted``, or less so that one batch is at most one second's worth of rows."""
        return max(1, min(wanted, int(self._rate)))

    def after(self, rows: int) -> float:
        """Count ``rows`` as done; sleep as long as the rate asks. Returns the seconds slept."""
        self._rows += rows
        wait = self._start + self._rows / self._rate - self._clock()
        if wait <= 0:
            return 0.0
        self._sleep(wait)
        return wait
