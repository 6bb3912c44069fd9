"""``Job.cancelled`` is made on first use: every thread must still see one and the same Event."""

from __future__ import annotations

import threading

from worker.job import Job


def new_job() -> Job:
    return Job(id=1, job_id="j", type="t", payload={}, key="k", attempt=1, max_attempts=3,
               headers={})  # fmt: skip


def read_at_once(job: Job, threads: int) -> list[threading.Event]:
    """``job.cancelled`` as each of ``threads`` threads, released together, first read it."""
    start = threading.Barrier(threads)
    seen: list[threading.Event] = []

    def read() -> None:
        start.wait()
        seen.append(job.cancelled)

    readers = [threading.Thread(target=read) for _ in range(threads)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return seen


def test_threads_reading_cancelled_at_once_all_get_the_same_event() -> None:
    for _ in range(50):  # the first use races on each fresh job
        seen = read_at_once(new_job(), 8)
        assert len(seen) == 8
        assert len({id(event) for event in seen}) == 1


def test_the_worker_setting_it_is_what_the_handler_sees() -> None:
    job = new_job()
    job.cancelled.set()  # the watchdog's side, before the handler ever looked
    assert job.cancelled.is_set()
    assert job.cancelled.wait(0)


def test_jobs_compare_and_print_without_it() -> None:
    first, second = new_job(), new_job()
    first.cancelled.set()
    assert first == second
    assert "cancelled" not in repr(first)
