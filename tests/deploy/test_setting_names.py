"""Every OUTBOX_* variable the deployment files set is a real setting, with a value it accepts.

Names come from docker-compose.yml, the Kubernetes manifests (ConfigMap, example Secret,
container env, KEDA's connectionFromEnv), the Dockerfile's ENV and the CI workflow; the list of
real ones from the settings model itself (outbox.settings.Settings), not from a copy.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from outbox.settings import ENV_PREFIX, SettingsError, load_settings
from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    DOCKERFILE,
    WORKFLOW,
    container_env,
    dockerfile_instructions,
    env_keys,
    k8s_resources,
    load_yaml,
    only_container,
    resources_of,
    setting_names,
)

TEST_ONLY_PREFIX = "OUTBOX_TEST_"  # read by tests/conftest.py, not by the settings model


def compose_environments() -> dict[str, dict[str, str]]:
    services = load_yaml(COMPOSE_FILE)["services"]
    return {
        name: {k: str(v) for k, v in service.get("environment", {}).items()}
        for name, service in services.items()
        if any(k.startswith(ENV_PREFIX) for k in service.get("environment", {}))
    }


def k8s_environments() -> dict[str, dict[str, str]]:
    workloads = resources_of("Deployment") + resources_of("Job")
    return {w["metadata"]["name"]: container_env(only_container(w)) for w in workloads}


def names_used() -> set[str]:
    names: set[str] = set()
    for env in [*compose_environments().values(), *k8s_environments().values()]:
        names |= set(env)
    for resource in k8s_resources():
        for trigger in resource.get("spec", {}).get("triggers", []):
            names.add(trigger["metadata"]["connectionFromEnv"])
    for instruction in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "ENV":
            names |= set(env_keys(instruction))
    for job in load_yaml(WORKFLOW)["jobs"].values():
        names |= set(job.get("env", {}))
    return {n for n in names if n.startswith(ENV_PREFIX) and not n.startswith(TEST_ONLY_PREFIX)}


def unknown(names: Iterable[str]) -> set[str]:
    return set(names) - setting_names()


def test_every_outbox_variable_in_the_deployment_files_is_a_setting() -> None:
    used = names_used()
    assert {"OUTBOX_DATABASE_URL", "OUTBOX_BROKER", "OUTBOX_LOG_FORMAT"} <= used
    assert unknown(used) == set()


def test_a_misspelt_variable_would_be_caught() -> None:
    assert unknown({"OUTBOX_PROBES_PORT", "OUTBOX_DATABASE_URL"}) == {"OUTBOX_PROBES_PORT"}


def environments() -> dict[str, dict[str, str]]:
    found = {f"compose:{k}": v for k, v in compose_environments().items()}
    found.update({f"k8s:{k}": v for k, v in k8s_environments().items()})
    return found


def load_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    load_settings()


@pytest.mark.parametrize("where", sorted(environments()))
def test_every_environment_builds_valid_settings(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environments()[where]
    load_with(monkeypatch, env)
    assert env["OUTBOX_BROKER"] in {"kafka", "redis"}, "the relay refuses OUTBOX_BROKER=none"


def test_a_bad_value_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dict(environments()["k8s:outbox-relay"], OUTBOX_BROKER="kafak")
    with pytest.raises(SettingsError, match="OUTBOX_BROKER"):
        load_with(monkeypatch, env)
