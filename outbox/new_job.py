"""A job as a caller asks for it, validated before the database is touched.

Every refusal raises :class:`~outbox.errors.InvalidJobError` naming the field, so a bad job never
becomes a stack trace from PostgreSQL (jsonb refuses NUL characters, for one) or a silent drop.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from outbox.errors import InvalidJobError

TYPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9._\-]{1,249}")  # Kafka's own rule for topic names
MAX_ID_LENGTH = 255
MAX_PRIORITY = 32767  # smallint
MAX_ATTEMPTS_LIMIT = 1000
# A surrogate code point on its own is not valid UTF-8: psycopg cannot send it and jsonb refuses
# its \udXXX escape. Python strings (json.loads of "\ud800", for one) may hold them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    # isascii() reads a flag CPython keeps on the string: ASCII text, most of it, skips the search.
    return not text.isascii() and _SURROGATE.search(text) is not None


@dataclass(frozen=True)
class EnqueueLimits:
    """Bounds on what one job may carry; the gateway takes them from settings."""

    max_payload_bytes: int = 1_048_576
    max_headers_bytes: int = 16_384


class NewJob(NamedTuple):
    """One validated job, its payload and headers already encoded as JSON text.

    A named tuple: ``enqueue_many`` builds one per job, and a frozen dataclass's ``__init__``
    (a call per field) was a fifth of validating one.
    """

    job_id: str
    type: str
    payload_json: str
    key: str
    topic: str | None
    priority: int
    run_at: datetime | None
    max_attempts: int | None
    headers_json: str

    @classmethod
    def build(
        cls,
        type: str,
        payload: Any,
        *,
        job_id: str | None = None,
        key: str | None = None,
        topic: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        limits: EnqueueLimits = EnqueueLimits(),  # frozen, so one shared default is safe
    ) -> NewJob:
        """Validate a caller's job; raise :class:`InvalidJobError` naming the first bad field."""
        _check_type(type)
        job_id = new_job_id() if job_id is None else _check_identifier("job_id", job_id)
        key = job_id if key is None else _check_identifier("key", key)
        if topic is not None and (not isinstance(topic, str) or not TOPIC_PATTERN.fullmatch(topic)):
            raise InvalidJobError("topic", "must be 1-249 characters of A-Z a-z 0-9 . _ -")
        _check_int("priority", priority, 0, MAX_PRIORITY)
        if max_attempts is not None:
            _check_int("max_attempts", max_attempts, 1, MAX_ATTEMPTS_LIMIT)
        if run_at is not None:
            run_at = _utc_run_at(run_at)
        # In the fields' order, not by keyword: keywords cost the tuple 0.4 us, double.
        return cls(
            job_id,
            type,
            _encode_payload(payload, limits.max_payload_bytes),
            key,
            topic,
            priority,
            run_at,
            max_attempts,
            _encode_headers(headers, limits.max_headers_bytes),
        )


def new_job_id() -> str:
    """A random (version 4) UUID in its usual text form, as ``str(uuid.uuid4())`` spells it.

    Built from the random bytes directly: the ``uuid.UUID`` object was a third of the cost of
    validating a job in ``enqueue_many``.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _check_type(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidJobError("type", "must be a non-empty string")
    if not TYPE_PATTERN.fullmatch(value):
        raise InvalidJobError(
            "type", "must start with a letter or digit and use only A-Z a-z 0-9 _ . : - (max 200)"
        )


def _check_identifier(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidJobError(field, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidJobError(field, f"must be at most {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        raise InvalidJobError(field, "must not contain NUL characters")
    if _has_surrogate(value):
        raise InvalidJobError(field, "must not contain unpaired surrogates (not valid UTF-8)")
    return value


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(field, "must be an integer")
    if not low <= value <= high:
        raise InvalidJobError(field, f"must be between {low} and {high}")


def _utc_run_at(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidJobError("run_at", "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidJobError("run_at", "must be timezone-aware (a naive time is ambiguous)")
    # The same instant in UTC: PostgreSQL refuses offsets past 15:59, Python allows up to 23:59.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidJobError("run_at", "is outside the years 1-9999 in UTC") from None


_PAYLOAD_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
"""The payload's JSON: compact, and refusing NaN and infinities, which jsonb cannot store."""

# Its C encoder made once from its options: ``JSONEncoder.encode`` makes a new one for every
# call, which was a sixth of validating a job in ``enqueue_many`` (0.9 of 5.1 us). No
# circular-reference markers: they are state, shared by every thread, and left behind by an
# error; a circular payload ends in RecursionError instead, refused below as too deep. Its
# output is ``_PAYLOAD_ENCODER.encode``'s (tested against ``json.dumps``).
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
if _C_ENCODER is not None:
    _encode_chunks = _C_ENCODER(
        None, _PAYLOAD_ENCODER.default, json.encoder.encode_basestring_ascii,
        _PAYLOAD_ENCODER.indent, _PAYLOAD_ENCODER.key_separator,
        _PAYLOAD_ENCODER.item_separator, _PAYLOAD_ENCODER.sort_keys,
        _PAYLOAD_ENCODER.skipkeys, _PAYLOAD_ENCODER.allow_nan,
    )  # fmt: skip

    def _payload_json(payload: Any) -> str:
        return "".join(_encode_chunks(payload, 0))

else:  # a Python without json's C speedups

    def _payload_json(payload: Any) -> str:
        return _PAYLOAD_ENCODER.encode(payload)


def _encode_payload(payload: Any, max_bytes: int) -> str:
    try:
        encoded = _payload_json(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidJobError("payload", f"is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InvalidJobError(
            "payload", "is nested too deeply to encode (or contains itself)"
        ) from None
    if len(encoded) > max_bytes:  # ASCII (non-ASCII is escaped), so characters are bytes
        raise InvalidJobError("payload", f"is larger than the limit of {max_bytes} bytes")
    # json escapes NUL as \u0000 and surrogates as \udXXX, and so may a literal backslash
    # followed by the same letters: look closer only then.
    if "\\u0000" in encoded or "\\ud" in encoded:
        refused = next(_refused_paths(payload, "payload"), None)
        if refused is not None:
            raise InvalidJobError(*refused)
    return encoded


def _refused_paths(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, message) of each string jsonb would refuse: NUL, or an unpaired surrogate."""
    if isinstance(value, str):
        yield from _refused_text(value, path)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                yield from _refused_text(k, f"{path} (a key)")
            yield from _refused_paths(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _refused_paths(v, f"{path}[{i}]")


def _refused_text(text: str, path: str) -> Iterator[tuple[str, str]]:
    if "\x00" in text:
        yield path, "must not contain NUL characters (jsonb refuses them)"
    elif _has_surrogate(text):
        yield path, "must not contain unpaired surrogates (jsonb refuses them)"


def _encode_headers(headers: Mapping[str, str] | None, max_bytes: int) -> str:
    if headers is None:
        return "{}"
    if not isinstance(headers, Mapping):
        raise InvalidJobError("headers", "must be a mapping of strings to strings")
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name:
            raise InvalidJobError("headers", "must be a mapping of non-empty strings to strings")
        if "\x00" in name or "\x00" in value:
            raise InvalidJobError(f"headers.{name}", "must not contain NUL characters")
        if _has_surrogate(name) or _has_surrogate(value):
            raise InvalidJobError("headers", "must not contain unpaired surrogates")
    encoded = json.dumps(dict(headers), separators=(",", ":"))
    if len(encoded) > max_bytes:  # ASCII, as the payload's
        raise InvalidJobError("headers", f"are larger than the limit of {max_bytes} bytes")
    return encoded
