"""Handler values (results, progress) as JSON text that PostgreSQL's jsonb is sure to accept.

Checked here rather than left to the database: completions are written in batches, and one
value jsonb refuses would fail the statement for every job in the batch.
"""

from __future__ import annotations

import json
import re
from typing import Any

# jsonb refuses NUL and a surrogate not paired with its partner; Python strings may hold both.
_REFUSED_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def to_json_text(value: Any) -> str:
    """``value`` as compact JSON; ValueError for what jsonb refuses (NaN, NUL, non-JSON types)."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-serialisable: {exc}") from None
    # ensure_ascii writes every such character as \u0000 or \udXXX: look closer only then.
    if ("\\u0000" in text or "\\ud" in text) and _holds_refused(value):
        raise ValueError("contains NUL or an unpaired surrogate, which jsonb refuses")
    return text


def _holds_refused(value: Any) -> bool:
    if isinstance(value, str):
        return _REFUSED_CHARACTERS.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_refused(k) or _holds_refused(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_refused(v) for v in value)
    return False
