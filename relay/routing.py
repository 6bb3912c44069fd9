"""Where a job goes: its own topic, else its type's, else the default topic or stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from outbox.queries import RelayRow
from relay.publisher import OutgoingMessage


@dataclass(frozen=True)
class Router:
    """Topic routing and the shape of the message built from a row."""

    default_topic: str
    topics_by_type: Mapping[str, str] = field(default_factory=dict)

    def topic_for(self, row: RelayRow) -> str:
        return row.topic or self.topics_by_type.get(row.type, self.default_topic)

    def message_for(self, row: RelayRow) -> OutgoingMessage:
        """The message for the job's next attempt (attempts are counted when a worker claims)."""
        return OutgoingMessage(
            id=row.id,
            job_id=row.job_id,
            type=row.type,
            key=row.key,
            topic=self.topic_for(row),
            payload_json=row.payload_json,
            attempt=row.attempts + 1,
            headers=row.headers,
        )
