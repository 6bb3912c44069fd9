"""Named places in the code where a test crashes the process on purpose, to prove recovery.

Off unless ``OUTBOX_FAILPOINTS`` names some, e.g. ``relay.after_mark=kill`` or
``relay.after_publish=kill:3`` (on the third pass). Production never sets it; the cost of an
inactive failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from outbox.errors import OutboxError

KNOWN_FAILPOINTS = frozenset(
    {
        "relay.after_produce",  # Kafka: produced, delivery reports not awaited (maybe sent)
        "relay.after_publish",  # the broker acked; nothing marked yet
        "relay.after_mark",  # rows marked PUBLISHED; the transaction not committed
        "relay.after_commit",  # the batch is committed
        "worker.after_claim",  # the claim is committed; the handler has not started
        "worker.in_handler",  # the handler is running
        "worker.after_handler",  # the handler returned; the outcome is not committed
        "operator.after_change",  # a bulk command's batch is changed; its audit row not written
        "operator.after_audit",  # the batch and its audit row are written; not committed
    }
)
ACTIONS = frozenset({"kill", "raise"})


class FailpointError(OutboxError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass
class _Armed:
    action: str
    on_pass: int
    passes: int = 0


_armed: dict[str, _Armed] = {}
_lock = threading.Lock()


def configure(spec: str) -> None:
    """Arm the failpoints named in ``spec`` (comma-separated ``name=action[:pass]``); "" disarms."""
    armed: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rule = item.partition("=")
        action, _, on_pass = rule.partition(":")
        if name not in KNOWN_FAILPOINTS:
            raise OutboxError(f"OUTBOX_FAILPOINTS: unknown failpoint {name!r}")
        if action not in ACTIONS:
            raise OutboxError(f"OUTBOX_FAILPOINTS: {name} needs an action of {sorted(ACTIONS)}")
        if on_pass and not (on_pass.isdigit() and int(on_pass) >= 1):
            raise OutboxError(f"OUTBOX_FAILPOINTS: {name}: pass must be a positive integer")
        armed[name] = _Armed(action, int(on_pass or 1))
    with _lock:
        _armed.clear()
        _armed.update(armed)


def failpoint(name: str) -> None:
    """Crash here if this failpoint is armed and this is the pass it waits for."""
    if not _armed:
        return
    with _lock:
        armed = _armed.get(name)
        if armed is None:
            return
        armed.passes += 1
        if armed.passes != armed.on_pass:
            return
    if armed.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise FailpointError(f"failpoint {name} fired")
