from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from outbox.errors import InvalidJobError
from outbox.new_job import EnqueueLimits, NewJob, new_job_id


def test_defaults_make_a_fresh_job_id_and_use_it_as_the_key() -> None:
    job = NewJob.build("email.send", {"to": "x"})
    assert job.key == job.job_id
    assert len(job.job_id) == 36
    assert NewJob.build("email.send", {}).job_id != job.job_id
    assert (job.priority, job.max_attempts, job.run_at, job.headers_json) == (0, None, None, "{}")


def test_payload_is_encoded_once_as_compact_json() -> None:
    job = NewJob.build("t", {"a": [1, 2.5, None, "é"]})
    assert json.loads(job.payload_json) == {"a": [1, 2.5, None, "é"]}


PAYLOADS = [
    {"a": [1, 2.5, None, "é"], "b": {"c": True, "d": False}},
    {"to": "user@example.com", "n": 0, "line\u2028sep": "tab\t", "emoji": "\U0001f600"},
    {3: "int key", 2.5: "float key", True: "bool key", None: "null key"},
    "a string",
    10**30,
    -0.0,
    1e300,
    [[[]], {}, ""],
    ("a", "tuple"),
    None,
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payload_json_is_what_json_dumps_gives_compact(payload: object) -> None:
    expected = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    assert NewJob.build("t", payload).payload_json == expected


def test_a_payload_that_contains_itself_is_refused_naming_the_payload() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(InvalidJobError, match="payload: is nested too deeply"):
        NewJob.build("t", loop)
    # and the encoder still works afterwards (no state left behind by the error)
    assert NewJob.build("t", {"after": 1}).payload_json == '{"after":1}'


def test_a_payload_nested_deeper_than_python_can_encode_is_refused_naming_the_payload() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    with pytest.raises(InvalidJobError) as caught:
        NewJob.build("t", deep)
    assert caught.value.field == "payload"


def test_a_literal_backslash_u0000_text_is_not_mistaken_for_nul() -> None:
    job = NewJob.build("t", {"s": "\\u0000"})
    assert json.loads(job.payload_json) == {"s": "\\u0000"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"a": {"b": ["ok", "x\x00"]}}, "payload.a.b[1]"),
        ({"k\x00": 1}, "payload (a key)"),
        ("\x00", "payload"),
    ],
)
def test_nul_characters_are_refused_with_their_path(payload: object, field: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        NewJob.build("t", payload)
    assert caught.value.field == field


def test_payload_limit_is_configurable() -> None:
    NewJob.build("t", "x" * 90, limits=EnqueueLimits(max_payload_bytes=100))
    with pytest.raises(InvalidJobError, match="100 bytes"):
        NewJob.build("t", "x" * 120, limits=EnqueueLimits(max_payload_bytes=100))


def test_payload_limit_counts_the_bytes_sent_for_non_ascii_text() -> None:
    # "é" goes as the six bytes \u00e9: 15 of them and the quotes are 92 bytes, 17 are 104.
    limits = EnqueueLimits(max_payload_bytes=100)
    assert len(NewJob.build("t", "é" * 15, limits=limits).payload_json.encode()) == 92
    with pytest.raises(InvalidJobError, match="100 bytes"):
        NewJob.build("t", "é" * 17, limits=limits)


@pytest.mark.parametrize("field", ["job_id", "key"])
def test_identifiers_take_any_valid_unicode_and_refuse_unpaired_surrogates(field: str) -> None:
    assert getattr(NewJob.build("t", {}, **{field: "commande-été-✓"}), field) == "commande-été-✓"
    with pytest.raises(InvalidJobError) as caught:
        NewJob.build("t", {}, **{field: "été\ud800"})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": None}, "type"),
        ({"type": ".starts-with-dot"}, "type"),
        ({"type": "x" * 201}, "type"),
        ({"job_id": "x" * 256}, "job_id"),
        ({"job_id": 42}, "job_id"),
        ({"key": "a\x00"}, "key"),
        ({"topic": "no spaces"}, "topic"),
        ({"priority": True}, "priority"),
        ({"priority": 40000}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"max_attempts": 1001}, "max_attempts"),
        ({"run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"headers": {"a": 1}}, "headers"),
        ({"headers": ["a"]}, "headers"),
        ({"payload": {1, 2}}, "payload"),
        ({"payload": float("inf")}, "payload"),
    ],
)
def test_each_bad_field_is_named(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"type": "t", "payload": {}} | kwargs
    with pytest.raises(InvalidJobError) as caught:
        NewJob.build(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_any_timezone_is_accepted_for_run_at() -> None:
    tokyo = timezone(timedelta(hours=9))
    for run_at in (datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=tokyo)):
        assert NewJob.build("t", {}, run_at=run_at).run_at == run_at


def test_new_job_ids_are_version_4_uuids_in_their_usual_text_form() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id  # lower-case hex, dashes at 8-4-4-4-12
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
