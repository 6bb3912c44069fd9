"""The Redis Streams adapter of :class:`~relay.publisher.Publisher`: one stream per topic.

Each message is added by a server-side Lua script that XADDs and records the entry id under a
dedup key for (job_id, attempt, due time) in one atomic step, so publishing again after a crash
adds no second entry and answers with the first entry's id. This is the only relay module that
imports ``redis``; its exceptions become error :class:`Delivery` values here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from hashlib import sha1
from typing import Any

import redis
from redis.exceptions import NoScriptError

from outbox.topics import redis_stream
from relay.publisher import Delivery, OutgoingMessage

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# KEYS[1]: dedup key, KEYS[2]: stream. ARGV[1]: dedup TTL in seconds, ARGV[2]: MAXLEN (0 means
# no trimming), ARGV[3..]: field/value pairs. The check and the XADD run in one script so two
# relays racing on the same job cannot both add an entry.
# The dedup key stores "entry id, space, stream": a re-publish routed elsewhere since (the
# topic settings changed) still answers with where the one entry really is.
PUBLISH_ONCE = """
local first = redis.call('GET', KEYS[1])
if first then
  return first
end
local id
if tonumber(ARGV[2]) > 0 then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
local where = id .. ' ' .. KEYS[2]
redis.call('SET', KEYS[1], where, 'EX', ARGV[1])
return where
"""


def entry_fields(message: OutgoingMessage) -> list[str]:
    """The stream entry's field/value pairs, flattened in the order the script passes them on.

    ``job_id``, ``type`` and ``attempt`` are top-level fields and win over same-named keys in
    ``headers``, as in :meth:`OutgoingMessage.broker_headers`.
    """
    authoritative = message.broker_headers()
    return [
        "job_id", authoritative["job_id"],
        "type", authoritative["type"],
        "key", message.key,
        "attempt", authoritative["attempt"],
        "payload", message.payload_json,
        "headers", json.dumps(dict(message.headers), sort_keys=True),
    ]  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class RedisPublisher:
    """Publishes to Redis Streams named ``stream_prefix + topic``, deduplicated per attempt."""

    def __init__(
        self,
        url: str,
        *,
        stream_prefix: str = "",
        maxlen: int | None = 1_000_000,
        dedup_ttl_seconds: int = 7 * 24 * 3600,
        timeout_seconds: float = 10.0,
    ) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError("maxlen must be positive, or None for no trimming")
        if dedup_ttl_seconds < 1:
            raise ValueError("dedup_ttl_seconds must be positive")
        # AUTH and TLS come with the URL (user:password@, rediss://).
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        # Redis names a script by its SHA-1; EVALSHA needs the name, not a secure hash.
        self._sha = sha1(PUBLISH_ONCE.encode(), usedforsecurity=False).hexdigest()
        self._prefix = stream_prefix
        self._maxlen = maxlen or 0
        self._ttl = dedup_ttl_seconds
        self._closed = False

    def stream_name(self, message: OutgoingMessage) -> str:
        """The stream the message goes to: one per topic."""
        return redis_stream(self._prefix, message.topic)

    def dedup_key(self, message: OutgoingMessage) -> str:
        """The key holding the entry id of this (job_id, attempt, due time)'s first publish.

        The due time is part of it because the same attempt can be published twice on purpose:
        a job snoozed (``worker.Retry``, a rate limit) or given back at shutdown is PENDING again
        with its attempt given back and a new ``run_at``. Keyed by attempt alone, that second
        publication would find the first entry, long acked by a worker, and add nothing: the job
        would wait PUBLISHED for a delivery that never comes. A re-send after a relay crash has
        the same row, the same due time, so it still adds no second entry.
        """
        key = f"{self._prefix}outbox:published:{message.job_id}:{message.attempt}"
        if message.due_at is None:
            return key
        return f"{key}:{(message.due_at - _EPOCH) // timedelta(microseconds=1)}"

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        """Publish the batch in one pipeline; one :class:`Delivery` per message, in order."""
        if not messages:
            return []
        try:
            replies = self._send(messages)
        except redis.RedisError as error:
            # The batch's fate is unknown (some scripts may have run); every message counts as
            # failed and is published again, which the dedup key makes harmless.
            text = _error_text(error)
            return [Delivery(message.id, error=text) for message in messages]
        return [self._delivery(m, reply) for m, reply in zip(messages, replies, strict=True)]

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Any]:
        replies = self._pipeline(messages)
        forgotten = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if forgotten:
            # The server lost the script (restart, SCRIPT FLUSH): load it once and send those
            # again; a script that never ran cannot have added an entry.
            self._client.script_load(PUBLISH_ONCE)
            again = self._pipeline([messages[i] for i in forgotten])
            for i, reply in zip(forgotten, again, strict=True):
                replies[i] = reply
        return replies

    def _pipeline(self, messages: Sequence[OutgoingMessage]) -> list[Any]:
        # No MULTI: the per-message scripts are atomic on their own, and a transaction would
        # let one failed message fail the batch. EVALSHA straight away, not redis-py's Script
        # helper, which asks SCRIPT EXISTS first: one round trip per batch instead of two.
        with self._client.pipeline(transaction=False) as pipe:
            for message in messages:
                keys = [self.dedup_key(message), self.stream_name(message)]
                pipe.evalsha(self._sha, 2, *keys, self._ttl, self._maxlen, *entry_fields(message))
            # raise_on_error=False: a failed script is returned in its slot, not raised, so
            # it does not hide the answers of the others.
            return pipe.execute(raise_on_error=False)

    def _delivery(self, message: OutgoingMessage, reply: Any) -> Delivery:
        if isinstance(reply, BaseException):
            return Delivery(message.id, error=_error_text(reply))
        if not isinstance(reply, bytes | str):
            return Delivery(message.id, error=f"unexpected reply from Redis: {reply!r}")
        entry_id, _, stream = _text(reply).partition(" ")
        return Delivery(message.id, receipt={"stream": stream, "entry_id": entry_id})

    def close(self) -> None:
        """Close the connections; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
