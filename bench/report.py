"""The suite's one table and JSON file: each row's median over its runs, and its ratios.

A row names its raw SQL limit (``raw``: the best of those rows' medians) and its kind of peer
(``peer_kind``: the best peer row of that kind). Throughput rows are "higher is better", so a
ratio above 1 beats the reference; latency rows (milliseconds, their figure is the p50) are
"lower is better", and their ratio is reference / row, so above 1 still means "better".
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Sample:
    """One run of one row: its figure (rows/s, or p50 ms for latency), and latency quantiles."""

    value: float
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class Row:
    """A line of the table: what it measures, what it is compared with, and its samples."""

    name: str
    unit: str
    raw: tuple[str, ...] = ()
    peer_kind: str | None = None
    is_peer: bool = False
    notes: str = ""
    samples: list[Sample] = field(default_factory=list)
    not_run: str | None = None

    @property
    def lower_is_better(self) -> bool:
        return self.unit == "ms"

    def median(self) -> float | None:
        return statistics.median(s.value for s in self.samples) if self.samples else None

    def spread(self) -> float | None:
        """(max - min) / median of the runs: a row whose runs met a busy machine shows it."""
        median = self.median()
        if len(self.samples) < 2 or not median:
            return None
        values = [s.value for s in self.samples]
        return (max(values) - min(values)) / abs(median)

    def quantile(self, attribute: str) -> float | None:
        values = [v for s in self.samples if (v := getattr(s, attribute)) is not None]
        return statistics.median(values) if values else None


def _best(rows: list[Row]) -> float | None:
    medians = [m for r in rows if (m := r.median()) is not None]
    if not medians:
        return None
    return min(medians) if rows[0].lower_is_better else max(medians)


def paired_ratio(figures: list[float], baseline: list[float]) -> float:
    """The median of the per-round ratios: each round's figures met the same machine noise."""
    return statistics.median(a / b for a, b in zip(figures, baseline, strict=True))


def ratio(row: Row, reference: float | None) -> float | None:
    """How ``row`` compares with ``reference``; above 1 means better, whatever the unit."""
    median = row.median()
    if median is None or reference is None or median <= 0 or reference <= 0:
        return None
    return reference / median if row.lower_is_better else median / reference


def ratios(rows: list[Row]) -> dict[str, tuple[float | None, float | None]]:
    """Each row's ratio to its raw limit and to the best peer of its kind."""
    by_name = {r.name: r for r in rows}
    out: dict[str, tuple[float | None, float | None]] = {}
    for row in rows:
        raw_rows = [by_name[n] for n in row.raw if n in by_name]
        peers = [r for r in rows if r.is_peer and r.peer_kind == row.peer_kind and r is not row]
        to_raw = ratio(row, _best(raw_rows)) if raw_rows else None
        to_peer = ratio(row, _best(peers)) if row.peer_kind and peers else None
        out[row.name] = (to_raw, to_peer)
    return out


def to_json(rows: list[Row], meta: dict[str, Any]) -> dict[str, Any]:
    computed = ratios(rows)
    return {
        **meta,
        "rows": [
            {
                "name": r.name,
                "unit": r.unit,
                "figure": "p50" if r.lower_is_better else "throughput",
                "median": r.median(),
                "p50_ms": r.quantile("p50_ms"),
                "p99_ms": r.quantile("p99_ms"),
                "runs": len(r.samples),
                "samples": [s.value for s in r.samples],
                "spread": r.spread(),
                "raw_reference": list(r.raw),
                "ratio_to_raw": computed[r.name][0],
                "ratio_to_best_peer": computed[r.name][1],
                "peer": r.is_peer,
                "notes": r.notes,
                "not_run": r.not_run,
            }
            for r in rows
        ],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "not run"
    return f"{value:.2f}" if unit == "ms" else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def show(rows: list[Row], meta: dict[str, Any], console: Console) -> None:
    m = meta["machine"]
    mode = " (QUICK mode: fewer jobs and runs)" if meta["quick"] else ""
    title = (f"outbox benchmark suite{mode}, median of {meta['runs']} run(s)\n{m['date']}  "
             f"{m['cores']} cores, {m['cpu']}, PostgreSQL {m['postgresql']}")  # fmt: skip
    table = Table(title=title)
    for column in ("row", "unit", "median", "spread", "p50 ms", "p99 ms", "runs", "vs raw",
                   "vs best peer", "notes"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("row", "unit", "notes") else "right")
    computed = ratios(rows)
    for r in rows:
        to_raw, to_peer = computed[r.name]
        unit = "p50 ms" if r.lower_is_better else r.unit
        table.add_row(r.name, unit, _figure(r.median(), r.unit), _percent(r.spread()),
                      _ms(r.quantile("p50_ms")),
                      _ms(r.quantile("p99_ms")), str(len(r.samples)), _times(to_raw),
                      _times(to_peer), r.notes)  # fmt: skip
    console.print(table)
    for r in rows:
        if r.not_run:  # too long for a cell
            console.print(f"{r.name}: not run: {r.not_run}", highlight=False)
    console.print(
        "Ratios: above 1.00x is better than the reference (for latency: reference/row). "
        "Spread: (max - min) / median of a row's runs."
    )
