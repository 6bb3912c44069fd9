"""deploy/prometheus/outbox-alerts.yml: the shape Prometheus loads, tied to the code and runbooks.

Every expression is parsed by a real PromQL parser and may name only metrics, labels and label
values the services expose, so renaming a metric breaks this test rather than silencing an alert.
Where promtool is installed, it checks the file and runs the rules' unit tests too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.deploy.deploy_files import ROOT, load_yaml
from tests.deploy.monitoring_files import (
    ALERT_RULES,
    ALERT_TESTS,
    RUNBOOKS,
    Rule,
    alert_rules,
    alerts_by_name,
    alerts_with_unit_tests,
    promtool,
)
from tests.deploy.promql_references import metrics_used, problems

RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
OPTIONAL_RULE_KEYS = {"keep_firing_for"}
GROUP_KEYS = {"name", "rules", "interval", "limit"}
SEVERITIES = {"warning", "critical"}
COMPONENTS = {"relay", "worker", "gateway"}
ANNOTATIONS = {"summary", "description", "runbook_url"}

ALERTS = alerts_by_name()


def rule_ids() -> list[str]:
    return sorted(ALERTS)


def test_the_file_is_groups_of_rules() -> None:
    data: dict[str, Any] = load_yaml(ALERT_RULES)
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    for group in data["groups"]:
        assert set(group) <= GROUP_KEYS, group["name"]
        assert group["rules"], f"group {group['name']} has no rules"


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("alert", rule_ids())
def test_each_rule_is_an_alert_with_every_field(alert: str) -> None:
    rule: Rule = ALERTS[alert]
    assert RULE_KEYS <= set(rule) <= RULE_KEYS | OPTIONAL_RULE_KEYS
    assert alert.startswith("Outbox")
    assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["component"] in COMPONENTS
    assert set(rule["annotations"]) == ANNOTATIONS
    assert all(str(text).strip() for text in rule["annotations"].values())


@pytest.mark.parametrize("alert", rule_ids())
def test_each_runbook_url_is_a_runbook_in_the_repository(alert: str) -> None:
    url = ALERTS[alert]["annotations"]["runbook_url"]
    path = Path(url)
    assert path.parts[0] == "runbooks", url
    assert path.suffix == ".md", url
    assert (ROOT / path).is_file(), f"{url} does not exist"
    assert (ROOT / path).resolve().parent == RUNBOOKS.resolve()


@pytest.mark.parametrize("alert", rule_ids())
def test_each_expression_names_only_real_metrics_labels_and_values(alert: str) -> None:
    assert problems(ALERTS[alert]["expr"]) == []


@pytest.mark.parametrize("alert", rule_ids())
def test_each_alert_reads_the_metrics_of_its_component(alert: str) -> None:
    rule = ALERTS[alert]
    used = metrics_used(rule["expr"])
    assert used, "an alert on no metric"
    assert all(name.startswith(f"outbox_{rule['labels']['component']}_") for name in used)


def rename_a_metric(expr: str) -> str:
    return expr.replace("outbox_worker_jobs_total", "outbox_worker_job_total")


def misspell_a_label(expr: str) -> str:
    return expr.replace("outcome=", "outcomes=")


def misspell_an_outcome(expr: str) -> str:
    return expr.replace('"dead"', '"deceased"')


def break_the_syntax(expr: str) -> str:
    return expr.replace("[15m]", "[15m")


@pytest.mark.parametrize(
    "break_it", [rename_a_metric, misspell_a_label, misspell_an_outcome, break_the_syntax]
)
def test_a_broken_expression_is_reported(break_it: Any) -> None:
    # The check above must fail for a real rule once it is broken, not only pass when it is not.
    expr = ALERTS["OutboxDeadLettersGrowing"]["expr"]
    broken = break_it(expr)
    assert broken != expr
    assert problems(broken)


def test_every_alert_fires_in_the_unit_tests() -> None:
    assert load_yaml(ALERT_TESTS)["rule_files"] == [ALERT_RULES.name]
    assert alerts_with_unit_tests() == set(ALERTS)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        [tool, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ALERT_RULES.parent,
    )


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", ALERT_RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_as_their_unit_tests_expect() -> None:
    result = run_promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
