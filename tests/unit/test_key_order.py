from relay.publisher import Delivery, OutgoingMessage
from relay.relay_loop import acked_in_key_order


def _message(i: int, key: str) -> OutgoingMessage:
    return OutgoingMessage(i, f"j{i}", "t", key, "topic", "{}", 1)


def test_a_failure_blocks_later_jobs_of_its_key_only() -> None:
    messages = [_message(1, "a"), _message(2, "b"), _message(3, "a"), _message(4, "b")]
    deliveries = [Delivery(1, error="timeout"), Delivery(2, {"o": 2}), Delivery(3, {"o": 3}),
                  Delivery(4, {"o": 4})]  # fmt: skip
    assert [r.id for r in acked_in_key_order(messages, deliveries)] == [2, 4]
