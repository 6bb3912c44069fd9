"""The laptop stack's docker-compose.yml, checked offline (no Docker engine needed).

``check-jsonschema`` validates it against the Compose Specification schema it ships with;
ruamel.yaml (a dependency of check-jsonschema) reads it for the assertions on its content.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def validate(compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(compose_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load(compose_file: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(compose_file)
    return data


def dump(data: dict[str, Any], path: Path) -> None:
    YAML(typ="safe").dump(data, path)


def test_compose_file_matches_the_compose_spec() -> None:
    result = validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def misspell_environment(data: dict[str, Any]) -> str:
    data["services"]["postgres"]["enviroment"] = data["services"]["postgres"].pop("environment")
    return "enviroment"


def bad_depends_on_condition(data: dict[str, Any]) -> str:
    data["services"]["redis"]["depends_on"] = {"postgres": {"condition": "service_ready"}}
    return "service_ready"


def ports_as_a_scalar(data: dict[str, Any]) -> str:
    data["services"]["redis"]["ports"] = 6379
    return "6379"


@pytest.mark.parametrize(
    "break_it", [misspell_environment, bad_depends_on_condition, ports_as_a_scalar]
)
def test_a_broken_compose_file_is_rejected(
    tmp_path: Path, break_it: Callable[[dict[str, Any]], str]
) -> None:
    data = load(COMPOSE_FILE)
    culprit = break_it(data)
    broken = tmp_path / "docker-compose.yml"
    dump(data, broken)

    result = validate(broken)

    assert result.returncode != 0
    assert culprit in result.stdout + result.stderr


def test_an_unbroken_round_tripped_copy_still_validates(tmp_path: Path) -> None:
    # The rejection above must come from the breakage, not from the YAML round trip.
    copy = tmp_path / "docker-compose.yml"
    dump(load(COMPOSE_FILE), copy)
    result = validate(copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", ["postgres", "redis", "kafka"])
def test_each_backing_service_is_defined_with_a_healthcheck(service: str) -> None:
    services = load(COMPOSE_FILE)["services"]
    assert service in services
    healthcheck = services[service].get("healthcheck")
    assert healthcheck, f"{service} has no healthcheck"
    assert healthcheck.get("test"), f"{service}'s healthcheck has no test"
    assert not healthcheck.get("disable", False)


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in load(COMPOSE_FILE)


def test_kafka_advertises_a_host_listener_and_a_network_listener() -> None:
    env = load(COMPOSE_FILE)["services"]["kafka"]["environment"]
    advertised = set(env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert {"PLAINTEXT_HOST://localhost:9092", "PLAINTEXT://kafka:19092"} <= advertised
    assert "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
