"""Waking a service (relay or worker): LISTEN/NOTIFY when it works, a polling interval always.

Notifications only shorten the wait. When they are off (PgBouncer in transaction mode), or the
listening session dies, the relay still polls, so no job waits longer than the interval.
A notification sent while nobody listened is lost, so a fresh LISTEN counts as a wake-up: the
caller looks for work once more before it sleeps.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

log = logging.getLogger(__name__)


class Waker:
    """Waits until a notification on ``channel`` arrives, ``stop`` is set, or the timeout ends."""

    def __init__(self, conninfo: str | None, channel: str, stop: threading.Event) -> None:
        self._conninfo = conninfo  # None: notifications off, poll only
        self._channel = channel
        self._stop = stop
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def wait(self, timeout: float) -> bool:
        """True when woken (a notification, or a fresh LISTEN); False after the timeout or stop."""
        if self._conninfo is not None and self._conn is None and self._listen(self._conninfo):
            return True
        if self._conn is None:
            self._stop.wait(timeout)
            return False
        deadline = time.monotonic() + timeout
        # Short slices, so a stop request is honoured within half a second.
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                if any(True for _ in self._conn.notifies(timeout=min(left, 0.5), stop_after=1)):
                    return True
            except psycopg.Error:
                log.warning("listening session lost; polling until it is back", exc_info=True)
                self.close()
                self._stop.wait(max(0.0, deadline - time.monotonic()))
                return False
        return False

    def _listen(self, conninfo: str) -> bool:
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel)))
        except psycopg.Error:
            log.warning("cannot LISTEN; polling instead", exc_info=True)
            return False
        self._conn = conn
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
