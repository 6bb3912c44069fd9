"""Command-line values typer does not parse for us, with errors that name the option."""

from __future__ import annotations

import getpass
import re
import socket
from datetime import UTC, datetime, timedelta

import typer

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def aware_datetime(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time with a timezone (``2026-11-22T10:00:00+05:30`` or ``...Z``), or None.

    Returned in UTC: the same instant, and one PostgreSQL accepts (it refuses offsets past
    ±15:59, which Python allows up to ±23:59).
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("needs a timezone, e.g. +00:00 or Z", param_hint=option)
    return parsed.astimezone(UTC)


def duration(value: str, option: str) -> timedelta:
    """A span such as ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise typer.BadParameter(
            f"{value!r} is not a duration such as 90s, 15m, 12h, 30d or 2w", param_hint=option
        )
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def required_reason(value: str) -> str:
    """The ``--reason`` of an operator command (typer refuses it missing): not blank either."""
    if not value.strip():
        raise typer.BadParameter("must not be blank; say why", param_hint="'--reason'")
    return value.strip()


def default_actor() -> str:
    """``user@host``: who ran an operator command, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
