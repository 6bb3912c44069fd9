"""docs/metrics.md lists exactly the metrics the gateway, relay and worker expose, as exposed.

The metrics classes are built on fresh registries; a metric added, renamed, retyped or relabelled
in code without its row here (or a row left behind) fails a test, as does a name that breaks the
naming rules, or an alerts or panels column that no longer says which alerts and panels read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.deploy.metric_catalogue import (
    CLOSED_LABEL_VALUES,
    Metric,
    catalogue,
    declared_names,
    registry_families,
)
from tests.deploy.monitoring_files import (
    METRICS_DOC,
    alert_rules,
    data_panels,
    panel_metrics,
)
from tests.deploy.promql_references import metrics_used

COLUMNS = ["metric", "type", "labels (values)", "unit", "meaning", "alerts", "dashboard panels"]
NONE = {"", "—", "-"}


@dataclass(frozen=True)
class DocRow:
    name: str
    type: str
    labels_cell: str
    unit: str
    meaning: str
    alerts: frozenset[str]
    panels: frozenset[str]

    def label_names(self) -> tuple[str, ...]:
        """The backticked names outside parentheses: `topic` (...), `outcome` (...)."""
        return tuple(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", self.labels_cell)))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def listed(cell: str, separator: str) -> frozenset[str]:
    return frozenset(item.strip() for item in cell.split(separator) if item.strip() not in NONE)


def doc_lines() -> list[str]:
    return METRICS_DOC.read_text().splitlines()


def metric_table_lines() -> list[str]:
    return [line for line in doc_lines() if re.match(r"\|\s*`outbox_", line)]


def doc_rows() -> dict[str, DocRow]:
    rows: dict[str, DocRow] = {}
    for line in metric_table_lines():
        name, kind, labels, unit, meaning, alerts, panels = cells(line)
        name = name.strip("`")
        rows[name] = DocRow(
            name, kind, labels, unit, meaning, listed(alerts, ","), listed(panels, ";")
        )
    return rows


METRICS = catalogue()
ROWS = doc_rows()


def metric_ids() -> list[str]:
    return sorted(METRICS)


def row(name: str) -> DocRow:
    assert name in ROWS, f"{name} has no row in docs/metrics.md"
    return ROWS[name]


# --- the catalogue is what the registries expose ------------------------------------------------


def test_the_catalogue_is_every_family_of_the_three_registries() -> None:
    families = registry_families()
    assert {name: m.type for name, m in METRICS.items()} == families


def test_the_names_in_the_code_are_the_names_prometheus_stores() -> None:
    # prometheus_client adds `_total` to a counter declared without it; the code must say it, so
    # that searching the code for the name the dashboards use finds it.
    assert set(declared_names()) == set(METRICS)


# --- the table -------------------------------------------------------------------------------


def test_the_metrics_table_has_the_documented_columns() -> None:
    header = next(line for line in doc_lines() if line.startswith("| metric |"))
    assert cells(header) == COLUMNS


def test_the_table_lists_every_metric_once_and_no_other() -> None:
    names = [cells(line)[0].strip("`") for line in metric_table_lines()]
    assert len(names) == len(set(names)), "a metric has two rows"
    missing = set(METRICS) - set(names)
    stale = set(names) - set(METRICS)
    assert not missing, f"exposed but not documented: {sorted(missing)}"
    assert not stale, f"documented but no longer exposed: {sorted(stale)}"


@pytest.mark.parametrize("name", metric_ids())
def test_each_row_gives_the_metric_its_type_and_labels(name: str) -> None:
    metric, documented = METRICS[name], row(name)
    assert documented.type == metric.type
    assert documented.label_names() == metric.labels
    assert documented.meaning, f"{name} has no meaning"


@pytest.mark.parametrize(("name", "label"), sorted(CLOSED_LABEL_VALUES))
def test_each_closed_label_lists_every_value_the_code_sets(name: str, label: str) -> None:
    cell = row(name).labels_cell
    values = re.search(rf"`{label}` \(([^)]*)\)", cell)
    assert values, f"{name}: no values listed for {label}"
    assert set(re.findall(r"`(\w+)`", values.group(1))) == CLOSED_LABEL_VALUES[(name, label)]


# --- naming rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", metric_ids())
def test_counters_and_only_counters_end_in_total(name: str) -> None:
    assert name.endswith("_total") == (METRICS[name].type == "counter")


@pytest.mark.parametrize("name", metric_ids())
def test_durations_end_in_seconds_and_are_documented_in_seconds(name: str) -> None:
    metric: Metric = METRICS[name]
    if metric.type == "histogram":
        assert name.endswith("_seconds"), "every histogram here measures a duration"
    assert row(name).unit.startswith("seconds") == name.endswith("_seconds")


# --- which alerts and panels read each metric ---------------------------------------------------


@pytest.mark.parametrize("name", metric_ids())
def test_the_alerts_column_names_the_alerts_that_read_the_metric(name: str) -> None:
    reading = {rule["alert"] for rule in alert_rules() if name in metrics_used(rule["expr"])}
    assert row(name).alerts == reading


@pytest.mark.parametrize("name", metric_ids())
def test_the_panels_column_names_the_panels_that_read_the_metric(name: str) -> None:
    reading = {panel["title"] for panel in data_panels() if name in panel_metrics(panel)}
    assert row(name).panels == reading


def test_the_alerts_table_lists_every_rule() -> None:
    lines = [line for line in doc_lines() if re.match(r"\| Outbox\w+ \|", line)]
    documented = [cells(line)[0] for line in lines]
    assert sorted(documented) == sorted(rule["alert"] for rule in alert_rules())
    severities = {cells(line)[0]: cells(line)[1] for line in lines}
    assert severities == {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
