"""``bench/claim_rows.py``: each variant runs the worker's claim and differs only in its types.

Its figures compare how the claim's rows come back (the token as text or as ``uuid.UUID``, one
timestamp or three), so a variant that claimed other jobs, fewer of them, or returned other
types than its name says would compare something else.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa

from bench import claim_rows
from outbox.database import create_engine

EXPECTED = {  # the token's type, and how many timestamps a row holds
    claim_rows.WORKER: (str, 1),
    "token as uuid": (uuid.UUID, 1),
    "token as uuid, three timestamps": (uuid.UUID, 3),
}


def test_each_variant_claims_a_full_batch_with_the_types_its_name_says(database_url: str) -> None:
    claim_rows.fill(database_url, 3 * 5)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        found = {}
        for name, statement in claim_rows.variants().items():
            rows = claim_rows.claim_once(conn, statement, 5)
            found[name] = {
                (type(row[claim_rows.TOKEN]), sum(isinstance(v, datetime) for v in row))
                for row in rows
            }
        left = conn.execute(sa.text("SELECT count(*) FROM outbox_jobs WHERE status = 'PENDING'"))
        assert left.scalar_one() == 0  # every variant claimed its own 5 jobs
    engine.dispose()

    assert found == {name: {expected} for name, expected in EXPECTED.items()}


def test_measure_gives_a_figure_per_round_for_every_variant(database_url: str) -> None:
    per_job = claim_rows.measure(database_url, rounds=3, batch=4)

    assert set(per_job) == set(EXPECTED)
    assert all(len(figures) == 3 and min(figures) > 0 for figures in per_job.values())
