"""deploy/grafana/outbox-dashboard.json: valid, laid out, and querying only real metrics.

Every target's expression goes through the same check as the alert rules (a real PromQL parser,
then names, labels and values against the services' registries), after Grafana's interval
variables are replaced as Grafana would.
"""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from tests.deploy.metric_catalogue import catalogue
from tests.deploy.monitoring_files import (
    DASHBOARD,
    Panel,
    all_panels,
    dashboard,
    data_panels,
    panel_metrics,
)
from tests.deploy.promql_references import problems, without_grafana_variables

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

PANELS = {panel["title"]: panel for panel in data_panels()}


def test_the_dashboard_is_valid_json_of_a_recent_schema() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["title"]
    assert data["uid"]
    assert 36 <= data["schemaVersion"] <= 41


def test_the_dashboard_picks_its_prometheus_through_a_datasource_variable() -> None:
    variables = dashboard()["templating"]["list"]
    sources = [v for v in variables if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in sources] == [("datasource", "prometheus")]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in all_panels()]
    assert len(ids) == len(set(ids))


def test_every_panel_has_a_title_and_titles_are_unique() -> None:
    titles = [panel.get("title", "") for panel in all_panels()]
    assert all(title.strip() for title in titles)
    assert len(titles) == len(set(titles))
    # docs/metrics.md separates the titles of a metric's panels with semicolons.
    assert not [title for title in titles if ";" in title]


@pytest.mark.parametrize("title", sorted(PANELS))
def test_each_panel_queries_the_datasource_variable(title: str) -> None:
    panel: Panel = PANELS[title]
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"], "a panel with no query"
    ref_ids = [target["refId"] for target in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))
    assert all(target["datasource"] == DATASOURCE for target in panel["targets"])


@pytest.mark.parametrize("title", sorted(PANELS))
def test_each_query_names_only_real_metrics_labels_and_values(title: str) -> None:
    for target in PANELS[title]["targets"]:
        assert problems(without_grafana_variables(target["expr"])) == [], target["expr"]


def test_every_metric_is_on_some_panel() -> None:
    shown = set().union(*(panel_metrics(panel) for panel in data_panels()))
    assert shown == set(catalogue())


def cells(panel: Panel) -> set[tuple[int, int]]:
    grid = panel["gridPos"]
    return {
        (x, y)
        for x in range(grid["x"], grid["x"] + grid["w"])
        for y in range(grid["y"], grid["y"] + grid["h"])
    }


def test_panels_fit_the_grid_without_overlapping() -> None:
    panels = all_panels()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert 0 < grid["w"] <= GRID_WIDTH - grid["x"]
    for one, other in combinations(panels, 2):
        assert not cells(one) & cells(other), f"{one['title']} overlaps {other['title']}"
