"""Daemon threads that run handlers, as many as the worker's concurrency, resizable while running.

Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the interpreter
exits, so one handler stuck past its timeout would keep a stopped worker from ever exiting; and
it cannot shrink. The worker submits only when it holds a free slot, so a task never waits for a
thread (except, briefly after a shrink, behind the threads still finishing their last task).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[], None]


class Executor:
    """``size`` daemon threads taking tasks in order of submission.

    A shrink queues one stop marker per thread too many: each ends the first thread that is
    free to take it, after its task. So threads alive always equal :attr:`size` plus the
    markers not yet taken, and :meth:`stop` ends every one of them.
    """

    def __init__(self, size: int, name: str = "handler") -> None:
        self._size = size
        self._name = name
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._started = False
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Threads that run tasks from now on (some of a shrink may still finish a task)."""
        with self._lock:
            return self._size

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._add_threads(self._size)

    def resize(self, size: int) -> None:
        """Run ``size`` threads: start new ones at once, or end the surplus after their task."""
        if size < 1:
            raise ValueError("an executor needs at least one thread")
        with self._lock:
            change, self._size = size - self._size, size
            if not self._started:
                return
            if change > 0:
                self._add_threads(change)
            for _ in range(-change):
                self._tasks.put(None)

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def stop(self) -> None:
        """Ask each thread to end after its task; threads stuck in a handler are left behind."""
        with self._lock:
            if self._started:
                for _ in range(self._size):
                    self._tasks.put(None)
                self._started = False

    def _add_threads(self, count: int) -> None:
        for _ in range(count):
            name = f"{self._name}-{next(self._numbers)}"
            threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception:  # tasks report their own outcomes; this is a bug in the worker
                log.exception("handler task crashed")
