"""A fixed set of daemon threads that run handlers.

Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the interpreter
exits, so one handler stuck past its timeout would keep a stopped worker from ever exiting.
The worker submits only when it holds a free slot, so a task never waits for a thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Task = Callable[[], None]


class Executor:
    """``size`` daemon threads taking tasks in order of submission."""

    def __init__(self, size: int, name: str = "handler") -> None:
        self._size = size
        self._name = name
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self._threads:
            for n in range(self._size):
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def stop(self) -> None:
        """Ask each thread to end after its task; threads stuck in a handler are left behind."""
        for _ in self._threads:
            self._tasks.put(None)
        self._threads = []

    def _loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception:  # tasks report their own outcomes; this is a bug in the worker
                log.exception("handler task crashed")
