"""One thread running an asyncio event loop, for ``async def`` handlers, as many at once as the
worker's concurrency.

The async handlers share the loop: one that blocks it (a synchronous call, heavy CPU work)
holds up every other, so blocking work belongs in a plain ``def`` handler, which gets a thread
of its own (:mod:`worker.executor`). A claim round hands its jobs to the loop in one call, not
one per job: waking the loop's thread costs more than starting a task on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

log = logging.getLogger(__name__)

AsyncTask = Callable[[], Coroutine[Any, Any, None]]


class AsyncExecutor:
    """Runs tasks on one event loop, at most ``size()`` at a time, in order of submission.

    ``size`` is read each time a task may start, so a resized worker (the autoscaler) starts
    more at once, or fewer as running ones end. A task waiting for room is like a sync job
    waiting for a thread: it has not started, and its timeout has not begun.
    """

    def __init__(self, size: Callable[[], int], name: str = "async-handlers") -> None:
        self._size = size
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Touched only on the loop's thread: no lock.
        self._waiting: deque[AsyncTask] = deque()
        self._active: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the loop's thread; returns once the loop runs."""
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        running = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(running.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        running.wait()

    def submit_all(self, tasks: Sequence[AsyncTask]) -> None:
        """Queue these tasks (from any thread); they start as room allows."""
        if self._loop is None:
            self.start()  # an async handler registered after the worker started
        assert self._loop is not None
        if tasks:
            self._loop.call_soon_threadsafe(self._take, tasks)

    def stop(self, timeout: float = 5.0) -> None:
        """Start what waits, cancel what runs, and end the loop once every task has ended.

        A task that ignores its cancellation, or a handler blocking the loop, is left behind
        with the (daemon) thread after ``timeout`` seconds, as a stuck handler thread is.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        ended = asyncio.run_coroutine_threadsafe(self._end_all(), loop)
        try:
            ended.result(timeout)
        except concurrent.futures.TimeoutError:
            log.warning("async handlers still running at shutdown are left behind")
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    def _take(self, tasks: Sequence[AsyncTask]) -> None:
        self._waiting.extend(tasks)
        self._fill(self._size())

    def _fill(self, size: int) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._active) < size:
            task = loop.create_task(self._run(self._waiting.popleft()))
            self._active.add(task)  # the loop keeps only a weak reference to a task

    async def _run(self, make: AsyncTask) -> None:
        # Bookkeeping here rather than in a done callback: a callback is one more turn of the
        # loop per job.
        try:
            await make()
        except asyncio.CancelledError:
            pass  # stop(): the job was settled before its task was cancelled
        except Exception:
            log.exception("handler task crashed")  # tasks report their own outcomes: a bug
        finally:
            task = asyncio.current_task()
            assert task is not None
            self._active.discard(task)
            if self._waiting:
                self._fill(self._size())

    async def _end_all(self) -> None:
        running = list(self._active)
        for task in running:
            task.cancel()
        # Jobs still waiting were settled by the shutdown: started now, each returns at once.
        self._fill(len(self._active) + len(self._waiting))
        await asyncio.gather(*self._active, return_exceptions=True)
