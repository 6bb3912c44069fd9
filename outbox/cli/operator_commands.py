"""Operator commands: ``outbox jobs retry|cancel|requeue-dead|purge``, ``outbox replay`` and
``outbox audit list``.

Every bulk command selects jobs by ``--id`` (repeat it), ``--status``, ``--type``, ``--key`` and a
creation time range (``--since``, ``--until``). Without ``--yes`` it prints how many jobs it would
change and the first ten, and changes nothing. With ``--yes`` it applies in audited batches (see
:mod:`outbox.cli.bulk_action`). Exit codes: 0 previewed or applied, 1 a filter it refuses, 2 a
usage error (a missing or blank ``--reason`` among them), 130 interrupted between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from sqlalchemy.engine import Connection

import gateway
from outbox import queries
from outbox.cli import render
from outbox.cli.bulk_action import BulkAction, Outcome, apply, preview
from outbox.cli.options import aware_datetime, default_actor, duration, required_reason
from outbox.cli.pacing import Pacer
from outbox.job_record import JobRecord
from outbox.states import FINISHED_STATES, JobStatus

S = JobStatus
_T = TypeVar("_T")
Database = Callable[[], AbstractContextManager[Connection]]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
audit_app = typer.Typer(help="The operators' audit trail.", no_args_is_help=True)
_wiring: dict[str, Database] = {}

RETRY_DEFAULT = frozenset({S.FAILED, S.DEAD, S.CANCELLED})
SAME_ID_NOTE = (
    "Same job_id: consumers that keep the ids of jobs they processed will drop these as "
    "duplicates (this project's worker runs them again: the row decides). To have every consumer "
    "process them again, replay with --as-new."
)

# Help texts: typer keeps a docstring's line breaks, so each paragraph here is one string.
HELP = {
    "retry": (
        "FAILED, DEAD or CANCELLED jobs -> PENDING, due now (PUBLISHED too, with --status "
        "PUBLISHED: a message the broker lost).\n\n"
        "DEAD and CANCELLED jobs get fresh attempts, FAILED and PUBLISHED keep theirs: the same "
        "statement as the gateway's POST /v1/jobs/{job_id}/retry."
    ),
    "cancel": (
        "PENDING, PUBLISHED or FAILED jobs -> CANCELLED; the reason becomes their last error."
        "\n\nA PROCESSING job is never cancelled: a worker holds its lease and is running it. "
        "Cancel it once it is FAILED (or PENDING again)."
    ),
    "requeue-dead": "DEAD jobs -> PENDING, due now, with a fresh set of attempts.",
    "purge": (
        "Delete finished jobs (COMPLETED, CANCELLED, DEAD) that finished longer ago than "
        "--older-than.\n\nLive jobs (PENDING, PUBLISHED, PROCESSING, FAILED) are never deleted."
    ),
    "replay": (
        "Publish PUBLISHED or COMPLETED jobs again, to their topic or --to-topic.\n\n"
        "By default each job goes back to PENDING with the same job_id and fresh attempts, and "
        "the relay publishes it again (with --to-topic, the job's topic is replaced). Its due "
        "time is new, so the Redis publisher's dedup on (job_id, attempt, due time) lets it "
        "through as a new entry.\n\n"
        "Same job_id means: consumers that keep the ids of jobs they processed will drop it as a "
        "duplicate. This project's worker runs it again (the row decides, and it is claimable). "
        "To have every consumer process it again, use --as-new: new jobs (new job_id, the "
        "original's in header replay_of) go through the normal enqueue path, and the originals "
        "stay as they are."
    ),
}
_COMMON_HELP = (
    "\n\nWithout --yes: prints how many jobs would change and the first 10, changes nothing. "
    "With --yes: applies in batches of --batch-size, each one transaction with one audit row, "
    "at most --max-rate rows/s; a job that changed since it matched is left alone. --reason is "
    "required. Exit 0: previewed or applied; 1: a filter refused."
)

Ids = Annotated[list[str] | None, typer.Option("--id", help="A job_id; repeat for several.")]
Statuses = Annotated[
    list[str] | None,
    typer.Option(help="Only jobs in this state (default: each the command moves); repeatable."),
]
Type = Annotated[str | None, typer.Option("--type", help="Job type.")]
Key = Annotated[str | None, typer.Option("--key", help="Ordering key.")]
Since = Annotated[str | None, typer.Option(help="Created at or after (ISO 8601, with a zone).")]
Until = Annotated[str | None, typer.Option(help="Created before (ISO 8601, with a zone).")]
Reason = Annotated[str, typer.Option(help="Why: required, written to the audit trail.")]
Yes = Annotated[bool, typer.Option("--yes", help="Apply. Without it: print, change nothing.")]
Actor = Annotated[
    str | None, typer.Option(help="Who, for the audit trail.  [default: $USER@hostname]")
]
BatchSize = Annotated[
    int, typer.Option(min=1, max=10_000, help="Rows per batch: one transaction, one audit row.")
]
MaxRate = Annotated[float, typer.Option(min=0.1, help="Most rows per second, on average.")]


def register(app: typer.Typer, jobs_app: typer.Typer, database: Database) -> None:
    """Add these commands to the ``outbox`` program; ``database`` opens its connection."""
    _wiring["database"] = database
    for name, command in (("retry", retry), ("cancel", cancel),
                          ("requeue-dead", requeue_dead), ("purge", purge)):  # fmt: skip
        jobs_app.command(name, help=HELP[name] + _COMMON_HELP)(command)
    app.command("replay", help=HELP["replay"] + _COMMON_HELP)(replay)
    app.add_typer(audit_app, name="audit")


def retry(
    reason: Reason,
    ids: Ids = None, status: Statuses = None, type_: Type = None, key: Key = None,
    since: Since = None, until: Until = None, yes: Yes = False,
    actor: Actor = None, batch_size: BatchSize = 500, max_rate: MaxRate = 1000.0,
) -> None:  # fmt: skip
    """FAILED, DEAD or CANCELLED jobs -> PENDING (see ``HELP["retry"]``)."""
    why = required_reason(reason)
    chosen = _statuses(status, queries.REQUEUE_SOURCES, RETRY_DEFAULT, "retry")
    job_filter = _filter(ids, chosen, type_, key, since, until)
    action = BulkAction(
        "retry", job_filter, lambda conn, batch: queries.requeue(conn, _job_ids(batch),
                                                                 sources=chosen),
        _audit_filter(job_filter), wake=True,
    )  # fmt: skip
    what = f"{_names(chosen)} -> PENDING, due now (DEAD and CANCELLED with fresh attempts)"
    _run(action, what, why, yes=yes, actor=actor, batch_size=batch_size, max_rate=max_rate)


def cancel(
    reason: Reason,
    ids: Ids = None, status: Statuses = None, type_: Type = None, key: Key = None,
    since: Since = None, until: Until = None, yes: Yes = False,
    actor: Actor = None, batch_size: BatchSize = 500, max_rate: MaxRate = 1000.0,
) -> None:  # fmt: skip
    """PENDING, PUBLISHED or FAILED jobs -> CANCELLED (see ``HELP["cancel"]``)."""
    why = required_reason(reason)
    chosen = _statuses(status, queries.CANCEL_SOURCES, queries.CANCEL_SOURCES, "cancel")
    job_filter = _filter(ids, chosen, type_, key, since, until)
    action = BulkAction(
        "cancel", job_filter,
        lambda conn, batch: queries.cancel(conn, _job_ids(batch), reason=why, sources=chosen),
        _audit_filter(job_filter),
    )  # fmt: skip
    leased = replace(job_filter, statuses=frozenset({S.PROCESSING}))

    def note(conn: Connection) -> str:
        with conn.begin():
            count = queries.count_matching(conn, leased)
        return (f"PROCESSING jobs are never cancelled (a worker holds their lease): {count} "
                "matching PROCESSING jobs are left alone.")  # fmt: skip

    _run(action, f"{_names(chosen)} -> CANCELLED", why, yes=yes, actor=actor,
         batch_size=batch_size, max_rate=max_rate, note=note)  # fmt: skip


def requeue_dead(
    reason: Reason,
    ids: Ids = None, type_: Type = None, key: Key = None, since: Since = None,
    until: Until = None, yes: Yes = False, actor: Actor = None,
    batch_size: BatchSize = 500, max_rate: MaxRate = 1000.0,
) -> None:  # fmt: skip
    """DEAD jobs -> PENDING with fresh attempts (see ``HELP["requeue-dead"]``)."""
    why = required_reason(reason)
    dead = frozenset({S.DEAD})
    job_filter = _filter(ids, dead, type_, key, since, until)
    action = BulkAction(
        "requeue-dead", job_filter,
        lambda conn, batch: queries.requeue(conn, _job_ids(batch), sources=dead),
        _audit_filter(job_filter), wake=True,
    )  # fmt: skip
    what = "DEAD -> PENDING, due now, fresh attempts"
    _run(action, what, why, yes=yes, actor=actor, batch_size=batch_size, max_rate=max_rate)


def purge(
    reason: Reason,
    older_than: Annotated[
        str, typer.Option(help="Only jobs finished longer ago than this: 90s, 15m, 12h, 30d, 2w.")
    ],
    ids: Ids = None, status: Statuses = None, type_: Type = None, key: Key = None,
    since: Since = None, until: Until = None, yes: Yes = False,
    actor: Actor = None, batch_size: BatchSize = 500, max_rate: MaxRate = 1000.0,
) -> None:  # fmt: skip
    """Delete finished jobs older than a bound (see ``HELP["purge"]``)."""
    why = required_reason(reason)
    finished = FINISHED_STATES
    chosen = _statuses(status, finished, finished, "purge")
    age = _or_refuse(lambda: duration(older_than, "--older-than"))
    job_filter = _filter(ids, chosen, type_, key, since, until)

    def run(conn: Connection) -> None:
        with conn.begin():
            cutoff = queries.database_now(conn) - age
        bounded = replace(job_filter, finished_before=cutoff)
        action = BulkAction(
            "purge", bounded,
            lambda c, batch: queries.purge(c, _job_ids(batch), finished_before=cutoff,
                                           statuses=chosen),
            _audit_filter(bounded, older_than=older_than.strip()),
        )  # fmt: skip
        what = f"{_names(chosen)} finished before {cutoff.isoformat(timespec='seconds')}: deleted"
        _act(conn, action, what, why, yes=yes, actor=actor, batch_size=batch_size,
             max_rate=max_rate)  # fmt: skip

    with _connect() as conn:
        run(conn)


def replay(
    reason: Reason,
    ids: Ids = None, status: Statuses = None, type_: Type = None, key: Key = None,
    since: Since = None, until: Until = None,
    to_topic: Annotated[
        str | None, typer.Option(help="Publish to this topic instead of the job's own.")
    ] = None,
    as_new: Annotated[
        bool, typer.Option("--as-new", help="New jobs (new job_id, header replay_of).")
    ] = False,
    yes: Yes = False, actor: Actor = None,
    batch_size: BatchSize = 500, max_rate: MaxRate = 1000.0,
) -> None:  # fmt: skip
    """Publish PUBLISHED or COMPLETED jobs again (see ``HELP["replay"]``)."""
    why = required_reason(reason)
    chosen = _statuses(status, queries.REPLAY_SOURCES, queries.REPLAY_SOURCES, "replay")
    topic = None if to_topic is None else to_topic.strip()
    if topic == "":
        _refuse("--to-topic must not be blank")
    job_filter = _filter(ids, chosen, type_, key, since, until)
    audit_filter = _audit_filter(job_filter, to_topic=topic)
    if as_new:
        action = BulkAction("replay-as-new", job_filter, _copier(topic), audit_filter)
        what = f"{_names(chosen)}: copied into new jobs (new job_id, header replay_of)"
        _run(action, what, why, yes=yes, actor=actor, batch_size=batch_size, max_rate=max_rate)
        return
    action = BulkAction(
        "replay", job_filter,
        lambda conn, batch: queries.replay(conn, _job_ids(batch), to_topic=topic),
        audit_filter, wake=True,
    )  # fmt: skip
    what = f"{_names(chosen)} -> PENDING with the same job_id and fresh attempts: published again"
    _run(action, what, why, yes=yes, actor=actor, batch_size=batch_size, max_rate=max_rate,
         note=lambda conn: SAME_ID_NOTE)  # fmt: skip


@audit_app.command("list")
def list_audit(
    action: Annotated[
        str | None, typer.Option(help="Only this action: retry, cancel, purge, replay, ...")
    ] = None,
    since: Annotated[str | None, typer.Option(help="At or after (ISO 8601, with a zone).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most rows.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """What operators did (CLI and HTTP gateway), newest first."""
    after = _or_refuse(lambda: aware_datetime(since, "--since"))
    with _connect() as conn, conn.begin():
        records = queries.list_audit(conn, action=action, since=after, limit=limit)
    if as_json:
        render.print_json(out, {"audit": [r.to_json_dict() for r in records]})
    else:
        out.print(render.audit_table(records))


def _copier(topic: str | None) -> Callable[[Connection, Sequence[JobRecord]], list[str]]:
    def copy(conn: Connection, batch: Sequence[JobRecord]) -> list[str]:
        specs = [_copy_of(r, topic) for r in batch]
        return gateway.enqueue_many(conn, specs)  # the normal enqueue path, NOTIFY included

    return copy


def _copy_of(job: JobRecord, topic: str | None) -> gateway.JobSpec:
    """The job again, as a new job: same type, payload, key, priority and attempts allowed."""
    return gateway.JobSpec(
        job.type, job.payload, key=job.key, topic=topic or job.topic, priority=job.priority,
        max_attempts=job.max_attempts, headers={**job.headers, "replay_of": job.job_id},
    )  # fmt: skip


def _run(
    action: BulkAction, what: str, reason: str, *, yes: bool, actor: str | None,
    batch_size: int, max_rate: float, note: Callable[[Connection], str] | None = None,
) -> None:  # fmt: skip
    with _connect() as conn:
        _act(conn, action, what, reason, yes=yes, actor=actor, batch_size=batch_size,
             max_rate=max_rate, note=note)  # fmt: skip


def _act(
    conn: Connection, action: BulkAction, what: str, reason: str, *, yes: bool,
    actor: str | None, batch_size: int, max_rate: float,
    note: Callable[[Connection], str] | None = None,
) -> None:  # fmt: skip
    if not yes:
        shown = preview(conn, action)
        out.print(f"{action.name} would take {shown.count} jobs: {what}", highlight=False)
        if shown.sample:
            out.print(render.jobs_table(shown.sample))
            out.print(f"first {len(shown.sample)} of {shown.count}, oldest first")
        if note is not None:
            out.print(note(conn), highlight=False)
        out.print("Preview only: nothing changed. Add --yes to apply.")
        return
    who = actor.strip() if actor and actor.strip() else default_actor()
    outcome = apply(conn, action, actor=who, reason=reason, batch_size=batch_size,
                    pacer=Pacer(max_rate))  # fmt: skip
    out.print(_summary(action.name, outcome, who), highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)
    if note is not None:
        out.print(note(conn), highlight=False)


def _summary(name: str, outcome: Outcome, actor: str) -> str:
    verb = "created" if name == "replay-as-new" else "deleted" if name == "purge" else "changed"
    stopped = " (interrupted: later batches not applied)" if outcome.interrupted else ""
    return (f"{name}: {verb} {outcome.changed} of {outcome.matched} matched jobs in "
            f"{outcome.batches} audited batches, actor {actor}{stopped}")  # fmt: skip


def _connect() -> AbstractContextManager[Connection]:
    return _wiring["database"]()


def _statuses(
    given: list[str] | None, allowed: frozenset[JobStatus], default: frozenset[JobStatus],
    action: str,
) -> frozenset[JobStatus]:  # fmt: skip
    if not given:
        return default
    chosen = set()
    for text in given:
        try:
            chosen.add(JobStatus(text.strip().upper()))
        except ValueError:
            _refuse(f"--status: {text!r} is no status; one of {_names(JobStatus)}")
    refused = chosen - allowed
    if refused:
        why = " (a worker holds its lease)" if refused == {S.PROCESSING} else ""
        _refuse(f"--status: {action} moves only {_names(allowed)} jobs, not {_names(refused)}{why}")
    return frozenset(chosen)


def _filter(
    ids: list[str] | None, statuses: frozenset[JobStatus], type_: str | None, key: str | None,
    since: str | None, until: str | None,
) -> queries.JobFilter:  # fmt: skip
    after = _or_refuse(lambda: aware_datetime(since, "--since"))
    before = _or_refuse(lambda: aware_datetime(until, "--until"))
    if after is not None and before is not None and after >= before:
        _refuse("--since must be earlier than --until")
    return queries.JobFilter(
        statuses=statuses, type=type_, key=key, created_after=after, created_before=before,
        job_ids=frozenset(ids) if ids else None,
    )  # fmt: skip


def _or_refuse(parse: Callable[[], _T]) -> _T:
    try:
        return parse()
    except typer.BadParameter as exc:
        _refuse(exc.format_message())


def _refuse(message: str) -> NoReturn:
    """A filter the command cannot take: one line, exit 1 (nothing was read or changed)."""
    err.print(f"error: {message}", highlight=False)
    raise typer.Exit(1)


def _audit_filter(job_filter: queries.JobFilter, **extra: Any) -> dict[str, Any]:
    f = job_filter
    values: dict[str, Any] = {
        "job_ids": sorted(f.job_ids) if f.job_ids else None,
        "statuses": sorted(f.statuses) if f.statuses else None,
        "type": f.type, "key": f.key, "since": _iso(f.created_after),
        "until": _iso(f.created_before), "finished_before": _iso(f.finished_before), **extra,
    }  # fmt: skip
    return {k: v for k, v in values.items() if v is not None}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _job_ids(batch: Sequence[JobRecord]) -> list[str]:
    return [r.job_id for r in batch]


def _names(statuses: Iterable[JobStatus]) -> str:
    return ", ".join(sorted(s.value for s in statuses))
