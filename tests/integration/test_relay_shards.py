"""Relay replicas share the key space: shards owned through advisory locks, taken over on loss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway
from outbox import queries
from outbox.schema import jobs
from relay.shards import ShardOwnership

SHARDS = 16


@pytest.fixture
def connections(engine: Engine) -> Iterator[list[sa.Connection]]:
    opened: list[sa.Connection] = []
    yield opened
    for conn in opened:
        conn.invalidate()
        conn.close()


def relay_session(engine: Engine, opened: list[sa.Connection]) -> sa.Connection:
    conn = engine.connect()
    opened.append(conn)
    return conn


def test_a_lone_relay_owns_every_shard(engine: Engine, connections: list[sa.Connection]) -> None:
    ownership = ShardOwnership(SHARDS)
    assert ownership.rebalance(relay_session(engine, connections))
    assert ownership.owned == frozenset(range(SHARDS))
    assert ownership.owns_all


def test_two_relays_split_the_shards_evenly_and_disjointly(
    engine: Engine, connections: list[sa.Connection]
) -> None:
    first, second = ShardOwnership(SHARDS), ShardOwnership(SHARDS)
    first_conn, second_conn = relay_session(engine, connections), relay_session(engine, connections)
    first.rebalance(first_conn)
    second.rebalance(second_conn)  # joins: every shard is taken, so it gets none yet
    assert second.owned == frozenset()

    first.rebalance(first_conn)  # sees two members: gives half back
    second.rebalance(second_conn)  # takes the free half

    assert len(first.owned) == len(second.owned) == SHARDS // 2
    assert first.owned.isdisjoint(second.owned)
    assert not first.rebalance(first_conn)  # balanced: nothing moves any more
    assert not second.rebalance(second_conn)


def test_the_shards_of_a_lost_session_are_taken_over_at_the_next_rebalance(
    engine: Engine, connections: list[sa.Connection]
) -> None:
    first, second = ShardOwnership(SHARDS), ShardOwnership(SHARDS)
    first_conn, second_conn = relay_session(engine, connections), relay_session(engine, connections)
    for _ in range(2):
        first.rebalance(first_conn)
        second.rebalance(second_conn)
    assert len(second.owned) == SHARDS // 2

    first_conn.invalidate()  # the relay died: its session, and every lock of it, is gone

    assert second.rebalance(second_conn)
    assert second.owned == frozenset(range(SHARDS))


def test_relays_that_disagree_on_the_shard_count_change_nothing(
    engine: Engine, connections: list[sa.Connection]
) -> None:
    sixteen, eight = ShardOwnership(16), ShardOwnership(8)
    sixteen_conn = relay_session(engine, connections)
    sixteen.rebalance(sixteen_conn)
    assert not eight.rebalance(relay_session(engine, connections))
    assert eight.owned == frozenset()
    assert not sixteen.rebalance(sixteen_conn)
    assert len(sixteen.owned) == 16


def test_a_key_always_maps_to_one_shard_and_a_batch_holds_only_owned_shards(
    engine: Engine,
) -> None:
    keys = [f"customer-{i}" for i in range(40)]
    with engine.begin() as conn:
        gateway.enqueue_many(conn, [gateway.JobSpec("t", {}, key=k) for k in keys * 3])
        shard_of = dict(
            conn.execute(sa.select(jobs.c.key, queries.shard_of_key(SHARDS)).distinct()).all()
        )
    assert set(shard_of) == set(keys)  # distinct (key, shard) pairs: one shard per key
    assert set(shard_of.values()) <= set(range(SHARDS))
    owned = [0, 1, 2, 3, 4, 5, 6, 7]
    with engine.begin() as conn:
        rows = queries.fetch_relayable(conn, limit=1000, shards=(SHARDS, owned))
    expected = sum(3 for k in keys if shard_of[k] in owned)
    assert 0 < len(rows) == expected < len(keys) * 3
    assert {shard_of[row.key] for row in rows} <= set(owned)
