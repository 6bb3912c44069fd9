"""The load generator: business transactions, each a business row plus its job, and a ledger.

About 20% roll back, half of them after the job was inserted. A transaction whose COMMIT raised
is "unknown" until the checker looks for its business row.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import Enum

import sqlalchemy as sa
from sqlalchemy.engine import Engine

import gateway

BUSINESS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_orders (
    job_id text PRIMARY KEY,
    key text NOT NULL,
    seq integer NOT NULL
)
"""
KEYS = 16


class Outcome(Enum):
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    UNKNOWN = "unknown"  # COMMIT raised: the business row tells


@dataclass
class Ledger:
    """What the load generator did, per job_id."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def with_outcome(self, outcome: Outcome) -> set[str]:
        return {j for j, o in self.outcomes.items() if o is outcome}


def create_business_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(BUSINESS_TABLE))


def run_transactions(
    engine: Engine, count: int, ledger: Ledger, *, rate: float, seed: int = 7
) -> None:
    """``count`` business transactions, one after another at ``rate`` a second, each one job."""
    rng = random.Random(seed)
    started = time.monotonic()
    for seq in range(count):
        ahead = started + seq / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # an open-loop schedule of arrivals, not a wait for anything
        job_id, key = f"order-{seq}", f"customer-{seq % KEYS}"
        ledger.keys[job_id], ledger.seqs[job_id] = key, seq
        ledger.outcomes[job_id] = _one_transaction(engine, job_id, key, seq, rng.random())


def _one_transaction(engine: Engine, job_id: str, key: str, seq: int, roll: float) -> Outcome:
    insert = sa.text("INSERT INTO chaos_orders (job_id, key, seq) VALUES (:job_id, :key, :seq)")
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            conn.execute(insert, {"job_id": job_id, "key": key, "seq": seq})
            if roll < 0.1:  # rolled back before the job was written
                transaction.rollback()
                return Outcome.ROLLED_BACK
            gateway.enqueue(conn, "chaos.order", {"seq": seq}, job_id=job_id, key=key)
            if roll < 0.2:  # rolled back after the job was written
                transaction.rollback()
                return Outcome.ROLLED_BACK
            try:
                transaction.commit()
            except sa.exc.DBAPIError:
                return Outcome.UNKNOWN
            return Outcome.COMMITTED
    except sa.exc.DBAPIError:  # the database went away before COMMIT: nothing was committed
        return Outcome.ROLLED_BACK


def resolve_unknown(engine: Engine, ledger: Ledger) -> None:
    """An unknown COMMIT happened if and only if its business row exists."""
    unknown = ledger.with_outcome(Outcome.UNKNOWN)
    if not unknown:
        return
    query = sa.text("SELECT job_id FROM chaos_orders WHERE job_id = ANY(:ids)")
    with engine.connect() as conn:
        present = set(conn.execute(query, {"ids": list(unknown)}).scalars())
    for job_id in unknown:
        ledger.outcomes[job_id] = Outcome.COMMITTED if job_id in present else Outcome.ROLLED_BACK
