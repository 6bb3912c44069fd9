"""The laptop stack's docker-compose.yml, checked offline (no Docker engine needed).

``check-jsonschema`` validates it against the Compose Specification schema it ships with;
ruamel.yaml (a dependency of check-jsonschema) reads it for the assertions on its content.
"""

from __future__ import annotations

import re
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


# --- the outbox services, built from the Dockerfile ----------------------------------------------

OUTBOX_SERVICES = ("gateway", "relay", "worker")


def outbox_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = load(COMPOSE_FILE)["services"][name]
    return service


@pytest.mark.parametrize("service", ["migrate", *OUTBOX_SERVICES])
def test_outbox_services_are_built_from_the_repository_dockerfile(service: str) -> None:
    build = outbox_service(service)["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile).is_file()
    # No `user:` override: the image's own non-root USER applies (tests/deploy checks it).
    assert "user" not in outbox_service(service)


def test_migrate_is_a_one_shot_outbox_migrate_after_postgres_is_healthy() -> None:
    migrate = outbox_service("migrate")
    assert migrate["command"] == ["migrate"]  # the image's ENTRYPOINT is `outbox`
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", OUTBOX_SERVICES)
def test_each_service_starts_after_migrate_completes_and_its_backends_are_healthy(
    service: str,
) -> None:
    depends_on = outbox_service(service)["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    backends = {"postgres"} | ({"kafka"} if service != "gateway" else set())
    for backend in backends:
        assert depends_on[backend]["condition"] == "service_healthy", backend


@pytest.mark.parametrize("service", OUTBOX_SERVICES)
def test_each_service_runs_its_outbox_command(service: str) -> None:
    assert outbox_service(service)["command"][0] == service


@pytest.mark.parametrize("service", OUTBOX_SERVICES)
def test_each_healthcheck_fetches_both_probes_the_service_serves(service: str) -> None:
    from tests.deploy.served_probes import served

    spec = outbox_service(service)
    test = spec["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "the slim image has no curl"
    script = test[3]
    serves = served()[service]
    ports = {int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", script)}
    assert ports == {serves.port(spec["environment"])}
    paths = set(re.findall(r"'(/\w+)'", script))
    assert paths == {"/healthz", "/readyz"}
    assert paths <= serves.get_paths


def test_services_reach_the_backends_by_their_compose_names() -> None:
    env = outbox_service("relay")["environment"]
    assert "@postgres:5432/" in env["OUTBOX_DATABASE_URL"]
    advertised = load(COMPOSE_FILE)["services"]["kafka"]["environment"]
    assert f"PLAINTEXT://{env['OUTBOX_KAFKA_BOOTSTRAP_SERVERS']}" in advertised[
        "KAFKA_ADVERTISED_LISTENERS"
    ].split(",")
    assert load(COMPOSE_FILE)["services"]["kafka"]["image"].startswith("apache/kafka:")
