"""Commands of the ``outbox`` program: schema, read side, and the embedded dev stack."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

# The service wiring (FastAPI, uvicorn, APScheduler, relay, worker), the dev stack and Alembic
# are imported by the commands that need them: the read and operator commands start in half the
# time (about 0.7 s instead of 1.4 s here), which an operator running them in a loop notices.
from outbox import failpoints, queries
from outbox.cli import operator_commands, render
from outbox.cli.options import aware_datetime
from outbox.database import create_engine
from outbox.errors import OutboxError
from outbox.logging_setup import configure_logging
from outbox.settings import Settings, load_settings
from outbox.states import JobStatus

app = typer.Typer(
    help="Transactional outbox for PostgreSQL: enqueue, relay, process, operate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect jobs and act on them.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
gateway_app = typer.Typer(
    help="The HTTP gateway: with no subcommand, serve it.", invoke_without_command=True
)
app.add_typer(gateway_app, name="gateway")

log = logging.getLogger("outbox")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    failpoints.configure(settings.failpoints)
    return settings


@contextmanager
def _database() -> Iterator[sa.Connection]:
    """A connection to the configured database, closed afterwards; errors become one clear line."""
    settings = _settings()
    engine = create_engine(
        settings.database_url, pool_size=1, transaction_pooling=settings.transaction_pooling
    )
    try:
        with engine.connect() as conn:
            yield conn
    except sa.exc.OperationalError as exc:
        where = sa.make_url(settings.database_url).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise OutboxError(f"cannot reach the database at {where}: {reason}") from None
    finally:
        engine.dispose()


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations to OUTBOX_DATABASE_URL (never done at service start)."""
    from outbox import migrations_runner

    settings = _settings()
    migrations_runner.upgrade(settings.database_url, revision)
    with _database() as conn:
        current = ", ".join(migrations_runner.current_revisions(conn)) or "base"
    out.print(f"database at revision {current}")


@app.command()
def stats(as_json: JsonFlag = False) -> None:
    """Jobs per status and the age of the oldest due PENDING job."""
    with _database() as conn:
        backlog = queries.backlog_stats(conn)
    if as_json:
        render.print_json(out, render.stats_as_json(backlog))
    else:
        out.print(render.stats_table(backlog))


@jobs_app.command("list")
def list_jobs(
    status: Annotated[list[JobStatus] | None, typer.Option(help="Repeat for several.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Job type.")] = None,
    key: Annotated[str | None, typer.Option(help="Ordering key.")] = None,
    since: Annotated[str | None, typer.Option(help="Created at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Created before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows per page.")] = 50,
    before_id: Annotated[
        int | None, typer.Option(help="Page cursor: 'next' of the last page.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first, one page at a time (keyset pagination)."""
    job_filter = queries.JobFilter(
        statuses=frozenset(status) if status else None,
        type=type_,
        key=key,
        created_after=aware_datetime(since, "--since"),
        created_before=aware_datetime(until, "--until"),
    )
    with _database() as conn:
        records = queries.list_jobs(conn, job_filter, limit=limit, before_id=before_id)
    next_cursor = records[-1].id if len(records) == limit else None
    if as_json:
        jobs = [r.to_json_dict() for r in records]
        render.print_json(out, {"jobs": jobs, "next": next_cursor})
        return
    out.print(render.jobs_table(records))
    if next_cursor is not None:
        out.print(f"next page: --before-id {next_cursor}")


@jobs_app.command("show")
def show_job(job_id: str, as_json: JsonFlag = False) -> None:
    """One job in full. Exits 1 when no job has this job_id."""
    with _database() as conn:
        record = queries.get_job(conn, job_id)
    if record is None:
        err.print(f"no job with job_id {job_id!r}")
        raise typer.Exit(1)
    if as_json:
        render.print_json(out, record.to_json_dict())
    else:
        out.print(render.job_detail_table(record))


@app.command()
def relay() -> None:
    """Publish committed jobs to OUTBOX_BROKER (kafka or redis) until SIGTERM or Ctrl-C."""
    from outbox.cli import services

    settings = _settings()
    service = services.build_relay(settings)
    services.stop_on_signals(service.stop_event)
    probes = services.start_relay_probes(settings, service)
    log.info("relay started", extra={"broker": settings.broker})
    try:
        service.run()
    finally:
        probes.stop()
        service.publisher.close()
    log.info("relay stopped")


@app.command("worker")
def worker_command(
    handlers: Annotated[
        list[str],
        typer.Option(
            "--handlers", help="Module whose @worker.handler functions run; repeat for several."
        ),
    ],
) -> None:
    """Run handlers on jobs from OUTBOX_BROKER (or the table) until SIGTERM or Ctrl-C.

    Serves /healthz, /readyz and /metrics on OUTBOX_PROBE_HOST:OUTBOX_PROBE_PORT meanwhile.
    """
    from outbox.cli import services

    settings = _settings()
    registry = services.load_handlers(handlers)
    service = services.build_worker(settings, registry)
    services.stop_on_signals(service.stop_event)
    services.run_worker(settings, service)


@gateway_app.callback()
def gateway_command(ctx: typer.Context) -> None:
    """Serve the HTTP gateway on OUTBOX_GATEWAY_HOST:OUTBOX_GATEWAY_PORT until SIGTERM or Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from outbox.cli import services

    settings = _settings()
    services.run_gateway(settings)


@gateway_app.command("hash-token")
def hash_token(
    generate: Annotated[
        bool, typer.Option("--generate", help="Make a new random token; print it and its hash.")
    ] = False,
) -> None:
    """Print the SHA-256 of a token read from stdin, for OUTBOX_GATEWAY_TOKENS."""
    from outbox.cli import services

    if generate:
        token = services.new_gateway_token()
        typer.echo(f"token:  {token}")
        typer.echo(f"sha256: {services.gateway_token_hash(token)}")
        return
    token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        raise OutboxError("no token on stdin: pipe one in, or pass --generate")
    typer.echo(services.gateway_token_hash(token))


class DevBroker(StrEnum):
    redis = "redis"
    kafka = "kafka"
    none = "none"


@app.command()
def dev(
    jobs: Annotated[int, typer.Option(min=1, help="Demo jobs to submit.")] = 2000,
    rate: Annotated[float, typer.Option(min=1, help="Jobs per second offered.")] = 500.0,
    broker: Annotated[
        DevBroker, typer.Option(help="Embedded broker the relay publishes to; none: no relay.")
    ] = DevBroker.redis,
    gateway_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the HTTP gateway; 0: any free one.")
    ] = 8080,
) -> None:
    """Everything on the embedded default: no external service, no Docker. Ctrl-C stops."""
    from outbox.cli.dev import run_dev

    run_dev(out, demo_jobs=jobs, rate=rate, broker=broker.value, gateway_port=gateway_port)


# retry, cancel, requeue-dead, purge, replay, audit list: outbox/cli/operator_commands.py
operator_commands.register(app, jobs_app, _database)


def main() -> None:
    """Entry point: bad settings or an unreachable database print one line, never a traceback."""
    try:
        app()
    except OutboxError as exc:
        err.print(f"error: {exc}", highlight=False)
        sys.exit(2)
