"""A claimed job carries its payload and headers as JSON text, decoded on first read, to the
very values ``json.loads`` gives; otherwise it is the same :class:`Job` as one built directly."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from outbox.job_record import ClaimedJob
from worker import Job

PAYLOAD = (
    '{"n": 123456789012345678901234567890, "f": 0.1, "s": "\\u00e9\\ud83d\\ude00", "l": [1, null]}'
)
HEADERS = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'


def claimed(payload_json: str = PAYLOAD, headers_json: str = HEADERS) -> ClaimedJob:
    token, now = str(uuid.uuid4()), datetime.now(UTC)
    return ClaimedJob(7, "j-7", "t", payload_json, "k", None, 2, 5, headers_json, token, now)


def test_payload_and_headers_read_as_json_loads_reads_them() -> None:
    job = Job.claimed(claimed())
    assert job.payload == json.loads(PAYLOAD)
    assert job.payload["n"] == 123456789012345678901234567890  # exact, not a float
    assert job.headers == json.loads(HEADERS)
    assert Job.claimed(claimed("null", "{}")).payload is None


def test_a_claimed_job_equals_the_job_built_from_the_same_values() -> None:
    job = Job.claimed(claimed())
    built = Job(7, "j-7", "t", json.loads(PAYLOAD), "k", 2, 5, json.loads(HEADERS))
    assert job == built
    assert repr(job) == repr(built)
    assert (job.id, job.job_id, job.type, job.key, job.attempt, job.max_attempts) == (
        7, "j-7", "t", "k", 2, 5,
    )  # fmt: skip


def test_the_progress_writer_is_the_one_given() -> None:
    written: list[str] = []

    def write(progress_json: str) -> bool:
        written.append(progress_json)
        return True

    assert Job.claimed(claimed(), write).report_progress({"done": 3}) is True
    assert written == ['{"done":3}']


def test_a_missing_attribute_is_still_an_attribute_error() -> None:
    job: Any = Job.claimed(claimed())
    with pytest.raises(AttributeError, match="no attribute 'paylod'"):
        job.paylod  # noqa: B018
    assert not hasattr(job, "_payload")


def test_threads_reading_at_once_get_one_and_the_same_payload() -> None:
    job = Job.claimed(claimed())
    start = threading.Barrier(8)
    seen: list[object] = []

    def read() -> None:
        start.wait(5)
        seen.append(job.payload)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(seen) == 8
    assert all(value is seen[0] for value in seen)
