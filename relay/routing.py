"""The message built from a row, routed by :mod:`outbox.topics` (shared with the worker)."""

from __future__ import annotations

from dataclasses import dataclass

from outbox.queries import RelayRow
from outbox.topics import TopicRoutes
from relay.publisher import OutgoingMessage


@dataclass(frozen=True)
class Router(TopicRoutes):
    """Topic routing and the shape of the message built from a row."""

    def message_for(self, row: RelayRow) -> OutgoingMessage:
        """The message for the job's next attempt (attempts are counted when a worker claims)."""
        return OutgoingMessage(
            id=row.id,
            job_id=row.job_id,
            type=row.type,
            key=row.key,
            topic=self.topic_for(row.type, row.topic),
            payload_json=row.payload_json,
            attempt=row.attempts + 1,
            headers=row.headers,
            due_at=row.due_at,
        )
