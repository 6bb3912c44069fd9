"""How jobs and counts look on a terminal (rich tables) and to scripts (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from outbox.job_record import BacklogStats, JobRecord
from outbox.queries import AuditRecord

SHOW_FIELDS = (
    "job_id", "type", "key", "topic", "status", "priority", "attempts", "max_attempts",
    "run_at", "created_at", "published_at", "started_at", "finished_at", "locked_by",
    "locked_until", "last_error", "progress", "result", "publish_receipt", "headers", "payload",
)  # fmt: skip


def print_json(console: Console, value: Any) -> None:
    console.print_json(json.dumps(value, default=str), highlight=False)


def stats_as_json(stats: BacklogStats) -> dict[str, Any]:
    return {
        "counts": {status.value: count for status, count in stats.counts.items()},
        "total": sum(stats.counts.values()),
        "oldest_pending_age_seconds": stats.oldest_pending_age_seconds,
    }


def stats_table(stats: BacklogStats) -> Table:
    table = Table(title="outbox jobs by status")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for status, count in stats.counts.items():
        table.add_row(status.value, f"{count:,}")
    table.add_row("total", f"{sum(stats.counts.values()):,}", style="bold")
    age = stats.oldest_pending_age_seconds
    table.caption = "oldest due PENDING job: " + ("none" if age is None else f"{age:.1f} s old")
    return table


def jobs_table(records: Sequence[JobRecord]) -> Table:
    table = Table()
    for name in ("id", "job_id", "type", "key", "status", "attempts", "run_at", "last_error"):
        table.add_column(name, overflow="fold")
    for r in records:
        attempts = f"{r.attempts}/{'-' if r.max_attempts is None else r.max_attempts}"
        table.add_row(
            str(r.id), r.job_id, r.type, r.key, r.status.value, attempts,
            _when(r.run_at), (r.last_error or "")[:60],
        )  # fmt: skip
    return table


def job_detail_table(record: JobRecord) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    values = record.to_json_dict()
    for name in SHOW_FIELDS:
        value = values[name]
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(name, "" if value is None else shown)
    return table


def audit_table(records: Sequence[AuditRecord]) -> Table:
    table = Table(title="operator actions, newest first")
    for name in ("id", "at", "actor", "action", "count", "reason", "filter"):
        table.add_column(name, overflow="fold", justify="right" if name == "count" else "left")
    for r in records:
        table.add_row(
            str(r.id), _when(r.at), r.actor, r.action, f"{r.count:,}", r.reason,
            json.dumps(r.filter, sort_keys=True),
        )  # fmt: skip
    return table


def _when(value: datetime) -> str:
    return value.isoformat(timespec="seconds")
