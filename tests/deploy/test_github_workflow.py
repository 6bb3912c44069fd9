"""The CI workflow for users of the repository, validated offline with check-jsonschema's
bundled GitHub Workflows schema; the assertions check that it runs what `make test` runs and the
Alembic round trip against a PostgreSQL service, with the environment the tests honour."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import ROOT, WORKFLOW, dump_yaml, load_yaml, run_tool


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return run_tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(path))


def workflow() -> dict[str, Any]:
    # ruamel.yaml reads YAML 1.2, where the key `on` stays a string (1.1 would make it True).
    data: dict[str, Any] = load_yaml(WORKFLOW)
    return data


def run_lines(job: dict[str, Any]) -> list[str]:
    return [line for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_workflow_matches_the_github_workflow_schema() -> None:
    result = validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def job_without_runs_on(data: dict[str, Any]) -> str:
    del data["jobs"]["checks"]["runs-on"]
    return "runs-on"


def steps_as_a_mapping(data: dict[str, Any]) -> str:
    data["jobs"]["checks"]["steps"] = {"lint": "make lint"}
    return "steps"


def misspelt_timeout(data: dict[str, Any]) -> str:
    data["jobs"]["image"]["timeout-minute"] = data["jobs"]["image"].pop("timeout-minutes")
    return "timeout-minute"


@pytest.mark.parametrize("break_it", [job_without_runs_on, steps_as_a_mapping, misspelt_timeout])
def test_a_broken_workflow_is_rejected(
    tmp_path: Path, break_it: Callable[[dict[str, Any]], str]
) -> None:
    unbroken = tmp_path / "unbroken.yml"
    dump_yaml(workflow(), unbroken)
    assert validate(unbroken).returncode == 0, "the YAML round trip alone must not break it"
    data = workflow()
    culprit = break_it(data)
    broken = tmp_path / "ci.yml"
    dump_yaml(data, broken)

    result = validate(broken)

    assert result.returncode != 0
    assert culprit in result.stdout + result.stderr


def test_checks_run_every_part_of_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    parts = re.search(r"^test: (.+)$", makefile, re.MULTILINE)
    assert parts is not None
    lines = run_lines(workflow()["jobs"]["checks"])
    for part in parts.group(1).split():
        assert f"make {part}" in lines, f"`make {part}` is part of `make test`"


def test_alembic_round_trip_and_drift_check_run_in_order() -> None:
    lines = [line for line in run_lines(workflow()["jobs"]["checks"]) if "alembic" in line]
    commands = [line.split("alembic", 1)[1].strip() for line in lines]
    assert commands == ["upgrade head", "downgrade base", "upgrade head", "check"]


def test_database_urls_point_at_the_postgres_service_container() -> None:
    job = workflow()["jobs"]["checks"]
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    published = job["services"]["postgres"]["ports"]
    assert "5432:5432" in published
    for name in ("OUTBOX_DATABASE_URL", "OUTBOX_TEST_DATABASE_URL"):
        assert "@localhost:5432/" in job["env"][name], name


def test_test_variables_are_ones_the_test_fixtures_read() -> None:
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    honoured = set(re.findall(r'os\.environ\.get\("(OUTBOX_TEST_\w+)"\)', conftest))
    used = {name for name in workflow()["jobs"]["checks"]["env"] if name.startswith("OUTBOX_TEST_")}
    assert used
    assert used <= honoured
