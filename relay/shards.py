"""Sharing the key space between relay replicas: each shard is owned by one relay at a time.

A job's shard is a hash of its key, so all jobs of one key live in one shard, and one relay
publishes them in order. Ownership is a session-level PostgreSQL advisory lock held on the
relay's own connection, the same one its batches run on: if the relay dies or its connection
breaks, its batch aborts and its shards are free in the same instant, so no second relay can
publish a shard while a batch of it is still in flight.

Each relay also holds one "member" lock, so every relay can count the live ones and aim at an
even share (``ceil(shards / members)``): a relay with more gives the surplus back between
batches, a relay with fewer takes free shards.
"""

from __future__ import annotations

import logging
import math
import random

import sqlalchemy as sa
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

# Advisory lock namespaces (the first of the two int4 keys); arbitrary, but fixed forever.
SHARD_LOCK_CLASS = 0x6F62_0001
MEMBER_LOCK_CLASS = 0x6F62_0002
MAX_SHARDS = 1024
_MEMBER_ID_BITS = 20  # the low bits of a member lock are random; the high bits carry the count


_ADVISORY_LOCKS = """
    SELECT objid::bigint AS objid, pid = pg_backend_pid() AS mine
    FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = CAST(:lock_class AS bigint)::oid
"""


class ShardOwnership:
    """The shards this relay owns; changed only by :meth:`rebalance`, between batches."""

    def __init__(self, shard_count: int) -> None:
        if not 1 <= shard_count <= MAX_SHARDS:
            raise ValueError(f"shard_count must be 1..{MAX_SHARDS}, got {shard_count}")
        self.shard_count = shard_count
        self.owned: frozenset[int] = frozenset()
        self._member_id: int | None = None

    @property
    def owns_all(self) -> bool:
        return len(self.owned) == self.shard_count

    def forget(self) -> None:
        """The connection is gone, and with it every lock: own nothing until the next rebalance."""
        self.owned = frozenset()
        self._member_id = None

    def rebalance(self, conn: Connection) -> bool:
        """Join if needed, then give back or take shards towards an even share; True if changed.

        Runs on the relay's connection outside any batch, and commits (session locks outlive it).
        """
        if self._member_id is None:
            self._join(conn)
        members = self._count_members(conn)
        before = self.owned
        target = len(before) if members is None else math.ceil(self.shard_count / members)
        if len(self.owned) > target:
            self._release(conn, sorted(self.owned)[target:])
        elif len(self.owned) < target:
            self._take(conn, target - len(self.owned))
        conn.commit()
        if self.owned != before:
            log.info(
                "relay shards rebalanced",
                extra={"owned": len(self.owned), "members": members, "shards": self.shard_count},
            )
        return self.owned != before

    def _join(self, conn: Connection) -> None:
        while True:
            member_id = (self.shard_count << _MEMBER_ID_BITS) | random.getrandbits(_MEMBER_ID_BITS)
            if conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:c, :m)"),
                {"c": MEMBER_LOCK_CLASS, "m": member_id},
            ).scalar_one():
                self._member_id = member_id
                return

    def _count_members(self, conn: Connection) -> int | None:
        rows = conn.execute(sa.text(_ADVISORY_LOCKS), {"lock_class": MEMBER_LOCK_CLASS}).all()
        counts = {row.objid >> _MEMBER_ID_BITS for row in rows}
        if counts != {self.shard_count}:
            # Relays that disagree on the shard count would split keys differently and could
            # publish one key from two places; change nothing until the operator fixes it.
            log.error(
                "relays disagree on OUTBOX_RELAY_SHARDS; set the same value on every relay",
                extra={"shard_counts": sorted(counts)},
            )
            return None
        return len(rows)

    def _release(self, conn: Connection, shards: list[int]) -> None:
        conn.execute(
            sa.text("SELECT pg_advisory_unlock(:c, s) FROM unnest(CAST(:shards AS int[])) AS s"),
            {"c": SHARD_LOCK_CLASS, "shards": shards},
        )
        self.owned = self.owned - set(shards)

    def _take(self, conn: Connection, wanted: int) -> None:
        held = {
            row.objid
            for row in conn.execute(sa.text(_ADVISORY_LOCKS), {"lock_class": SHARD_LOCK_CLASS})
        }
        free = [s for s in range(self.shard_count) if s not in held]
        # Start at a random place, so relays starting together do not all race for shard 0.
        random.shuffle(free)
        taken = conn.execute(
            sa.text(
                "SELECT s FROM unnest(CAST(:shards AS int[])) AS s"
                " WHERE pg_try_advisory_lock(:c, s)"
            ),
            {"c": SHARD_LOCK_CLASS, "shards": free[:wanted]},
        ).scalars()
        self.owned = self.owned | set(taken)


class BatchShardLocks:
    """Shards locked for one batch's transaction only: for relays behind transaction pooling.

    A transaction-pooling proxy (PgBouncer ``pool_mode=transaction``) hands each transaction
    whichever server session is free, so a session lock would stay behind on a session another
    client gets next. Here every batch tries each shard with a transaction-scoped lock, in a
    random order, and works on the ones it got; the commit frees them. The lock keys are the
    same as :class:`ShardOwnership`'s, so relays of both kinds exclude each other.

    Replicas of this kind take turns rather than split the shards (whoever starts a batch first
    gets every free shard), so a second replica buys failover, not throughput.
    """

    def __init__(self, shard_count: int) -> None:
        if not 1 <= shard_count <= MAX_SHARDS:
            raise ValueError(f"shard_count must be 1..{MAX_SHARDS}, got {shard_count}")
        self.shard_count = shard_count

    def lock_for_batch(self, conn: Connection) -> frozenset[int]:
        """Lock every free shard until the current transaction ends; return those locked.

        The rows must be read by a later statement than this one: in READ COMMITTED each
        statement sees what committed before it began, including the last holder's marks.
        """
        shards = list(range(self.shard_count))
        random.shuffle(shards)
        taken = conn.execute(
            sa.text(
                "SELECT s FROM unnest(CAST(:shards AS int[])) AS s"
                " WHERE pg_try_advisory_xact_lock(:c, s)"
            ),
            {"c": SHARD_LOCK_CLASS, "shards": shards},
        ).scalars()
        return frozenset(taken)
