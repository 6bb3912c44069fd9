"""The seam between the relay and a broker: publish a batch, learn which messages were acked.

Kafka and Redis publishers implement :class:`Publisher`; one contract test suite runs against
both. Vendor exceptions stop at the adapter: callers see :class:`Delivery` values only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """One job as it goes to the broker. ``attempt`` is the attempt this delivery is for."""

    id: int
    job_id: str
    type: str
    key: str
    topic: str
    payload_json: str
    attempt: int
    headers: Mapping[str, str] = field(default_factory=dict)
    due_at: datetime | None = None
    """When the row became due: tells one publication of an attempt from a later one of the same
    attempt (a job snoozed, given back or requeued is PENDING again with its attempt given back)."""

    def broker_headers(self) -> dict[str, str]:
        """The job's own headers (trace context) plus ``job_id``, ``type`` and ``attempt``."""
        return {**self.headers, "job_id": self.job_id, "type": self.type,
                "attempt": str(self.attempt)}  # fmt: skip


@dataclass(frozen=True)
class Delivery:
    """The broker's answer for one message: a receipt when acked, else the error."""

    id: int
    receipt: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def acked(self) -> bool:
        return self.receipt is not None


class Publisher(Protocol):
    """A broker adapter. ``publish`` returns one :class:`Delivery` per message, in order.

    It returns only when every message is acked or has failed (a bounded wait); a message whose
    fate is unknown counts as failed, so its row stays PENDING and is published again.
    """

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]: ...

    def close(self) -> None: ...
