"""The monitoring files under test: Prometheus alert rules, their unit tests, the Grafana dashboard.

YAML through ruamel.yaml, as the deployment files; JSON through the standard library.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

from tests.deploy.deploy_files import ROOT, load_yaml
from tests.deploy.promql_references import metrics_used, without_grafana_variables

ALERT_RULES = ROOT / "deploy" / "prometheus" / "outbox-alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "outbox-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "outbox-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOKS = ROOT / "runbooks"

Rule = dict[str, Any]
Panel = dict[str, Any]


def alert_rules() -> list[Rule]:
    return [rule for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def alerts_by_name() -> dict[str, Rule]:
    return {rule["alert"]: rule for rule in alert_rules()}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels() -> list[Panel]:
    """Every panel, rows and the panels of collapsed rows included."""
    panels: list[Panel] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def data_panels() -> list[Panel]:
    """Panels that query: all but rows, which only group them."""
    return [panel for panel in all_panels() if panel["type"] != "row"]


def panel_metrics(panel: Panel) -> set[str]:
    used: set[str] = set()
    for target in panel["targets"]:
        used |= metrics_used(without_grafana_variables(target["expr"]))
    return used


def alerts_with_unit_tests() -> set[str]:
    """Alert names the promtool unit tests expect to fire somewhere."""
    tested: set[str] = set()
    for test in load_yaml(ALERT_TESTS)["tests"]:
        for case in test.get("promql_expr_test", []):
            for sample in case.get("exp_samples") or []:
                tested |= set(re.findall(r'alertname="(\w+)"', sample["labels"]))
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                tested.add(case["alertname"])
    return tested


def promtool() -> str | None:
    """promtool, where installed (Debian's `prometheus` package has it; PyPI has none)."""
    return shutil.which("promtool")
