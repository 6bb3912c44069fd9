"""Which claims a worker makes in one round, so it never takes more than it may start.

A worker claims only the types it has handlers for: workers of different job types can share
one table, and a job whose handler is deployed nowhere waits (visible in the backlog) instead
of being taken and failed. Types with a concurrency limit or a type-wide rate limit are
claimed one type per statement, capped by their room (free slots of the type, whole tokens in
its bucket); the other handled types in one statement. Claiming a full batch and handing the
excess back would cost a write per job and churn the queue. Priority order holds within each
statement, not across them: the limited types go first, as they are the scarce ones.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimGroup:
    """One claim statement: only ``types`` (None: any) minus ``exclude_types``; at most ``cap``."""

    types: tuple[str, ...] | None
    exclude_types: tuple[str, ...]
    cap: float


def plan_claims(
    *,
    handled: Collection[str],
    concurrency_limits: Mapping[str, int],
    running: Mapping[str, int],
    tokens: Mapping[str, float],
) -> list[ClaimGroup]:
    """The claims of one round; the caller also caps each by its free slots and batch size.

    ``tokens`` holds the whole tokens of each type with a type-wide rate limit.
    """
    limited = sorted((set(concurrency_limits) | set(tokens)) & set(handled))
    groups = []
    for job_type in limited:
        room = min(
            concurrency_limits.get(job_type, math.inf) - running.get(job_type, 0),
            math.floor(tokens[job_type]) if job_type in tokens else math.inf,
        )
        if room > 0:
            groups.append(ClaimGroup((job_type,), (), room))
    free = tuple(sorted(set(handled) - set(limited)))
    if free:
        groups.append(ClaimGroup(free, (), math.inf))
    return groups
