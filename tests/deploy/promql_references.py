"""What a PromQL expression refers to, read by a real PromQL parser, checked against the code.

``promql-parser`` (Python bindings of the Rust ``promql-parser`` crate that GreptimeDB uses) parses
each expression offline, as Prometheus would; its vector selectors give the series names, label
matchers and values the expression depends on. A name, label or value the services never expose
makes the query silently empty, so each one is reported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser

from tests.deploy.metric_catalogue import CLOSED_LABEL_VALUES, series_labels, series_owner

# Grafana replaces these before the query reaches Prometheus; any valid duration parses the same.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # "=", "!=", "=~" or "!~"
    value: str


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{label op "value", ...}`` (name None when only ``__name__``)."""

    name: str | None
    matchers: tuple[Matcher, ...]


# The binding's MatchOp compares equal but is not hashable, so no dict.
_OPS = (
    (promql_parser.MatchOp.Equal, "="),
    (promql_parser.MatchOp.NotEqual, "!="),
    (promql_parser.MatchOp.Re, "=~"),
    (promql_parser.MatchOp.NotRe, "!~"),
)


def _op(op: promql_parser.MatchOp) -> str:
    return next(text for known, text in _OPS if op == known)


def without_grafana_variables(expr: str) -> str:
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    return expr


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of the expression; raises ValueError when it does not parse."""
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers + [m for g in node.matchers.or_matchers for m in g]
            found.append(
                Selector(node.name, tuple(Matcher(m.name, _op(m.op), m.value) for m in matchers))
            )

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metrics_used(expr: str) -> set[str]:
    """The metrics (a histogram for its ``_bucket``) the expression reads."""
    return {series_owner(s.name) for s in selectors(expr) if s.name is not None}


def problems(expr: str) -> list[str]:
    """Every name, label or value in the expression that no service exposes; empty if none."""
    try:
        found = selectors(expr)
    except ValueError as error:
        return [f"does not parse: {error}"]
    series = series_labels()
    issues: list[str] = []
    for selector in found:
        if selector.name is None:
            issues.append("a selector without a metric name")
        elif selector.name not in series:
            issues.append(f"unknown metric {selector.name}")
        else:
            for matcher in selector.matchers:
                issues.extend(_matcher_problems(selector.name, series[selector.name], matcher))
    return issues


def _matcher_problems(series: str, labels: tuple[str, ...], matcher: Matcher) -> list[str]:
    if matcher.label == "__name__":
        return []
    if matcher.label not in labels:
        return [f"{series} has no label {matcher.label!r} (it has {', '.join(labels) or 'none'})"]
    closed = CLOSED_LABEL_VALUES.get((series_owner(series), matcher.label))
    if closed is None:
        return []
    regex = matcher.op in {"=~", "!~"}
    # Each branch of a plain alternation (`retried|dead`) must name a real value.
    plain = regex and re.fullmatch(r"[\w|]+", matcher.value)
    wanted = matcher.value.split("|") if plain else [matcher.value]
    return [
        f"{series}{{{matcher.label}{matcher.op}{matcher.value!r}}}: {one!r} matches no value "
        f"the code sets ({', '.join(sorted(closed))})"
        for one in wanted
        if not any(re.fullmatch(one if regex else re.escape(one), value) for value in closed)
    ]
