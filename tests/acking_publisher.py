"""A publisher that acks every message at once: for tests about the database side of the relay."""

from __future__ import annotations

from collections.abc import Sequence

from relay.publisher import Delivery, OutgoingMessage


class AckingPublisher:
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        return [Delivery(m.id, receipt={"offset": m.id}) for m in messages]

    def close(self) -> None:
        pass
