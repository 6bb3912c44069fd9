"""Failpoints fire only where and when configured, and bad specs name what is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outbox import failpoints
from outbox.errors import OutboxError


@pytest.fixture(autouse=True)
def disarm() -> Iterator[None]:
    yield
    failpoints.configure("")


def test_an_unarmed_failpoint_does_nothing() -> None:
    failpoints.failpoint("relay.after_mark")


def test_a_raising_failpoint_fires_on_the_pass_it_waits_for_and_only_there() -> None:
    failpoints.configure("relay.after_mark=raise:3, relay.after_publish=raise")
    failpoints.failpoint("relay.after_mark")
    failpoints.failpoint("relay.after_mark")
    failpoints.failpoint("relay.after_commit")  # not armed
    with pytest.raises(failpoints.FailpointError, match=r"relay\.after_mark"):
        failpoints.failpoint("relay.after_mark")
    failpoints.failpoint("relay.after_mark")  # the fourth pass goes through
    with pytest.raises(failpoints.FailpointError, match=r"relay\.after_publish"):
        failpoints.failpoint("relay.after_publish")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("relay.nowhere=kill", "relay.nowhere"),
        ("relay.after_mark=explode", "relay.after_mark"),
        ("relay.after_mark=kill:0", "relay.after_mark"),
        ("relay.after_mark=kill:x", "relay.after_mark"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_failpoint(spec: str, named: str) -> None:
    with pytest.raises(OutboxError, match="OUTBOX_FAILPOINTS") as raised:
        failpoints.configure(spec)
    assert named in str(raised.value)
