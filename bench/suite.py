"""The benchmark suite: every row in one run on the same servers, one table and one JSON file.

    .venv/bin/python -m bench.suite [--quick] [--runs N] [--json bench/results/latest.json]
                                    [--skip-scaling]

Starts its own embedded PostgreSQL, Redis and Kafka (tansu), then runs, interleaved across
``--runs`` runs: the raw SQL limits, the enqueue rows (in-process and HTTP), the relay, the
worker, pgqueuer and procrastinate, and the scaling rows. Each figure is the median of its
runs; each row shows its ratio to its raw SQL limit and to the best peer of its kind. Every
row checks its jobs (each finished once, none lost); a failed check exits 1. ``--quick``
shrinks every size and runs once, and the table says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import closed_loop, drains, groups, scaling
from bench.report import Row, Sample, show, to_json, write_json
from bench.servers import Servers, machine, started_servers, warn

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"
FAILURES = (drains.DrainFailed, closed_loop.BenchError)
Group = Callable[[], dict[str, Sample]]


def all_rows(sizes: groups.Sizes, with_scaling: bool) -> list[Row]:
    table = groups.rows(sizes)
    if with_scaling:
        table += scaling.rows(sizes.finished_rows, sizes.processes, sizes.scaling_jobs,
                              groups.claim_rows(sizes.concurrency), sizes.concurrency)  # fmt: skip
    return table


def all_groups(
    servers: Servers, s: groups.Sizes, finished: scaling.FinishedRowsDatabases | None
) -> list[tuple[str, Group]]:
    named: list[tuple[str, Group]] = [
        ("raw SQL limits", lambda: groups.raw_limits_group(servers, s)),
        ("enqueue", lambda: groups.enqueue_group(servers, s)),
        ("relay", lambda: groups.relay_group(servers, s)),
        ("worker", lambda: groups.worker_group(servers, s)),
        ("peers", lambda: groups.peers_group(servers, s)),
    ]
    if finished is None:
        return named
    for count in s.finished_rows:
        named.append((f"scaling, {count:,} finished rows",
                      lambda f=count: scaling.finished_rows_group(  # type: ignore[misc]
                          finished.url(f), f, s.scaling_jobs, s.concurrency)))  # fmt: skip
    for n in s.processes:
        named.append((f"scaling, {n} processes",
                      lambda n=n: {scaling.processes_name(n): scaling.processes_group(  # type: ignore[misc]
                          servers, n, s.scaling_jobs, s.concurrency)}))  # fmt: skip
    return named


def run_suite(servers: Servers, sizes: groups.Sizes, *, with_scaling: bool = True,
              console: Console | None = None) -> list[Row]:  # fmt: skip
    """Every group ``sizes.runs`` times, interleaved; a group that cannot run marks its rows."""
    table = all_rows(sizes, with_scaling)
    finished = scaling.FinishedRowsDatabases(servers) if with_scaling else None
    try:
        failures = _run_groups(all_groups(servers, sizes, finished), table, sizes.runs, console)
    finally:
        if finished is not None:
            finished.close()
    for row in table:
        if not row.samples:  # its group failed, or it needs a broker that did not start
            row.not_run = "; ".join(failures) or "its server is not available here"
    return table


def _run_groups(
    named: list[tuple[str, Group]], table: list[Row], runs: int, console: Console | None
) -> list[str]:
    """Each group ``runs`` times, interleaved; returns why the groups that could not run failed."""
    by_name = {r.name: r for r in table}
    failures: list[str] = []
    for run in range(runs):
        for label, group in named:
            if console:
                console.print(f"run {run + 1}/{runs}: {label}", style="dim")
            try:
                samples = group()
            except FAILURES:
                raise
            except Exception as exc:  # a peer not installed, a broker down: say so, carry on
                samples = {}
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
                warn(f"not run: {failures[-1]}")
            for name, sample in samples.items():
                by_name[name].samples.append(sample)
    return failures


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about 3 minutes: smaller, 1 run")
    parser.add_argument("--runs", type=int, help="runs per row (default 3; quick: 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the JSON goes")
    parser.add_argument("--skip-scaling", action="store_true", help="leave the scaling rows out")
    return parser.parse_args(argv)


def meta(servers: Servers, sizes: groups.Sizes, quick: bool) -> dict[str, Any]:
    return {"machine": machine(servers.admin_url), "quick": quick, "runs": sizes.runs,
            "sizes": dict(sizes.__dict__)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    sizes = groups.Sizes.quick() if args.quick else groups.Sizes()
    if args.runs:
        sizes = replace(sizes, runs=args.runs)
    console = Console() if sys.stdout.isatty() else Console(width=180)
    try:
        with started_servers() as servers:
            table = run_suite(servers, sizes, with_scaling=not args.skip_scaling,
                              console=console)  # fmt: skip
            info = meta(servers, sizes, args.quick or sizes.runs < 3)
    except FAILURES as exc:
        Console(stderr=True).print(f"[bold red]check failed, no figures:[/] {exc}")
        raise SystemExit(1) from None
    show(table, info, console)
    write_json(args.json, to_json(table, info))
    console.print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
