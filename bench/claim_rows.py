"""What reading the claim's rows costs the claim loop, per job, by the types of its columns.

    .venv/bin/python -m bench.claim_rows [--rounds 400] [--batch 50]

The claim loop is the worker's critical path, and psycopg turns every column of every claimed
row into a Python object on it: a ``uuid`` through ``uuid.UUID(text)`` in Python, a
``timestamptz`` into a ``datetime`` with its time zone. This claims batches with the worker's own
statement, returning:

- **as the worker does**: the lease token as text and one timestamp (where the latency starts);
- **token as uuid**: the same with the lease token as ``uuid.UUID``;
- **token as uuid, three timestamps**: as the claim did before (``locked_until``,
  ``created_at`` and ``published_at`` as well);

and does with each row what the claim loop and the outcome writer do with the token: key the
jobs in hand by it, and put it as text into the completion. The variants alternate on one
connection of one embedded PostgreSQL; each figure is the claiming thread's CPU time
(``time.thread_time``: the database's own time is not in it) per job, median over the rounds,
and the paired ratio to the worker's columns.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/claim_rows.py`: the repository root holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.dialects import postgresql as pg

from bench import databases, raw_limits, report
from outbox import queries
from outbox.database import create_engine
from outbox.job_record import ClaimedJob

TOKEN = ClaimedJob._fields.index("lease_token")  # its place in a claimed row
WORKER = "as the worker does"


def variants() -> dict[str, sa.Executable]:
    """Each variant's claim: the worker's statement, its rows read back with other types.

    The variants select from the worker's claim as a CTE, so every one runs the same update;
    only the types of what comes back differ (the "three timestamps" repeat the one the claim
    returns, as many ``timestamptz`` values as the claim returned before).
    """
    worker = queries._claim_statement("bench:1:claim-rows", timedelta(seconds=30), 5, (), None, ())
    claimed = worker.cte("claimed")
    columns = [claimed.c[c.name] for c in queries._CLAIMED_COLUMNS]
    as_uuid = sa.cast(claimed.c.lease_token, pg.UUID(as_uuid=True)).label("lease_token")
    before_token, since = columns[:TOKEN], claimed.c.since
    return {
        WORKER: sa.select(*columns),
        "token as uuid": sa.select(*before_token, as_uuid, since),
        "token as uuid, three timestamps": sa.select(
            *before_token, as_uuid, since.label("a"), since.label("b"), since.label("c")
        ),
    }


def fill(url: str, count: int) -> None:
    """``count`` PENDING no-op jobs, the table analysed: the claims to come find them at once."""
    raw_limits.fill(url, count)
    databases.settle(url)


def claim_once(conn: sa.Connection, statement: sa.Executable, batch: int) -> list[Any]:
    """One claim, and what the worker does with each row's token; the rows' Python values."""
    rows = conn.execute(statement, {"claim_limit": batch, "claim_now": None}).all()
    in_hand = {row[TOKEN]: row for row in rows}
    completion = [str(row[TOKEN]) for row in rows]
    if len(in_hand) != batch or len(completion) != batch:
        raise RuntimeError(f"claimed {len(in_hand)} jobs, {batch} expected")
    return [tuple(row) for row in rows]


def measure(url: str, rounds: int, batch: int) -> dict[str, list[float]]:
    """Microseconds of the claiming thread's CPU per job, each variant once per round."""
    claims = variants()
    fill(url, rounds * len(claims) * batch)
    per_job: dict[str, list[float]] = {name: [] for name in claims}
    engine = create_engine(url)
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for round_number in range(rounds):
            order = list(claims.items())
            for name, statement in order if round_number % 2 else reversed(order):
                started = time.thread_time()
                claim_once(conn, statement, batch)
                per_job[name].append((time.thread_time() - started) / batch * 1e6)
    engine.dispose()
    return per_job


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=400, help="claims per variant")
    parser.add_argument("--batch", type=int, default=50, help="jobs per claim")
    args = parser.parse_args()
    with databases.embedded_outbox_database() as url:
        per_job = measure(url, args.rounds, args.batch)
    table = Table(title=f"claim rows: {args.rounds} alternating claims of {args.batch} each")
    for column in ("claim returns", "us of CPU per job", "paired ratio to the worker's"):
        table.add_column(column, justify="left" if column == "claim returns" else "right")
    for name, figures in per_job.items():
        ratio = report.paired_ratio(figures, per_job[WORKER])
        table.add_row(name, f"{statistics.median(figures):.2f}", f"{ratio:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
