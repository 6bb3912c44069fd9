"""Command-line values typer does not parse for us, with errors that name the option."""

from __future__ import annotations

from datetime import datetime

import typer


def aware_datetime(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time with a timezone (``2026-11-22T10:00:00+00:00`` or ``...Z``), or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("needs a timezone, e.g. +00:00 or Z", param_hint=option)
    return parsed
