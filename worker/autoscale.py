"""Dynamic concurrency: how many handler slots a worker should run, decided from its backlog.

A classic autoscaler, kept pure (time and measurements come in as arguments, nothing is read
or changed here) so that tests drive it with explicit inputs. Every few seconds the worker
samples its due backlog and the most slots it had busy at once since the last sample; then:

- **grow** once the backlog per slot has stayed above ``backlog_per_slot`` *and* every slot was
  busy, for ``grow_after`` seconds: towards ``backlog / backlog_per_slot`` slots (HPA's
  ``ceil(current * metric / target)``), at least one more, at most double, never past the maximum.
  Requiring busy slots keeps a backlog that more threads cannot help (a type held back by its own
  ``concurrency`` cap or rate limit) from growing the pool;
- **shrink** once some slots have stayed unused for ``shrink_after`` seconds: to the most that
  were busy at once in that time, never below the minimum;
- after any change, **wait** ``cooldown`` seconds, and start both windows afresh, so one burst
  does not make the size swing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    """Bounds and pace of the autoscaler; ``minimum == maximum`` is a fixed size."""

    minimum: int
    maximum: int
    backlog_per_slot: float = 1.0
    grow_after: float = 4.0
    shrink_after: float = 30.0
    cooldown: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(
                f"need 1 <= minimum <= maximum concurrency, got {self.minimum}..{self.maximum}"
            )
        if self.backlog_per_slot <= 0:
            raise ValueError("backlog_per_slot must be above 0")
        if min(self.grow_after, self.shrink_after, self.cooldown) < 0:
            raise ValueError("grow_after, shrink_after and cooldown must not be negative")

    def clamp(self, concurrency: int) -> int:
        return max(self.minimum, min(self.maximum, concurrency))


@dataclass(frozen=True)
class Sample:
    """One look at the worker: ``at`` in monotonic seconds."""

    at: float
    backlog: int  # due jobs of the handled types, not yet claimed
    peak_busy: int  # the most slots in use at once since the previous sample
    concurrency: int  # slots now


@dataclass(frozen=True)
class ScaleState:
    """What the autoscaler remembers between samples."""

    pressure_since: float | None = None  # first sample of the current run of pressure
    idle_since: float | None = None  # first sample of the current run of unused slots
    idle_peak: int = 0  # most slots busy at once during that run
    changed_at: float | None = None  # last change of size


def decide(policy: ScalePolicy, state: ScaleState, sample: Sample) -> tuple[int, ScaleState]:
    """The concurrency to run from now on, and the state to pass to the next call."""
    now, current = sample.at, sample.concurrency
    bounded = policy.clamp(current)
    if bounded != current:
        return bounded, ScaleState(changed_at=now)
    pressured = sample.peak_busy >= current and sample.backlog > policy.backlog_per_slot * current
    pressure_since = _since(state.pressure_since, now) if pressured else None
    idle = sample.peak_busy < current
    idle_since = _since(state.idle_since, now) if idle else None
    idle_peak = max(state.idle_peak, sample.peak_busy) if idle else 0
    cooled = state.changed_at is None or now - state.changed_at >= policy.cooldown
    target = current
    if cooled and pressure_since is not None and now - pressure_since >= policy.grow_after:
        wanted = math.ceil(sample.backlog / policy.backlog_per_slot)
        target = min(policy.maximum, max(current + 1, min(2 * current, wanted)))
    elif cooled and idle_since is not None and now - idle_since >= policy.shrink_after:
        target = max(policy.minimum, idle_peak)
    if target != current:
        return target, ScaleState(changed_at=now)
    return current, ScaleState(pressure_since, idle_since, idle_peak, state.changed_at)


def _since(started: float | None, now: float) -> float:
    return now if started is None else started


class Autoscaler:
    """:func:`decide` with its state kept; not thread-safe (the worker loop alone calls it)."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._state = ScaleState()

    def observe(self, sample: Sample) -> int:
        concurrency, self._state = decide(self.policy, self._state, sample)
        return concurrency
