"""A claim's RETURNING columns build a :class:`ClaimedJob` positionally, in its field order."""

from __future__ import annotations

from outbox import queries
from outbox.job_record import ClaimedJob

RENAMED = {"attempts": "attempt"}  # the column counts attempts; the job knows its own attempt


def test_claimed_columns_are_in_the_order_of_claimed_job_fields() -> None:
    columns = [RENAMED.get(c.name, c.name) for c in queries._CLAIMED_COLUMNS]
    assert columns == list(ClaimedJob._fields)
