"""The timeout watchdog: one thread that calls back when a running attempt passes its deadline.

A heap of deadlines rather than a timer thread per job: jobs come and go by the thousand.
Finished jobs are not removed; the callback finds them settled and does nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Watchdog(Generic[T]):
    """Calls ``on_expiry(item)`` once ``seconds`` have passed since :meth:`watch`."""

    def __init__(self, on_expiry: Callable[[T], None]) -> None:
        self._on_expiry = on_expiry
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()  # ties never compare the items themselves
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def watch(self, item: T, seconds: float) -> None:
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), item))
            self._changed.notify()

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while (item := self._next_expired()) is not None:
            try:
                self._on_expiry(item)
            except Exception:
                log.exception("timeout handling failed")

    def _next_expired(self) -> T | None:
        with self._changed:
            while not self._stopping:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    return heapq.heappop(self._heap)[2]
                timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                self._changed.wait(timeout)
            return None
