"""deploy/k8s, checked offline: kubernetes-validate (the API's own OpenAPI schemas, shipped in
the wheel) validates every core object strictly, then the assertions tie the manifests to the
code: probes on paths and ports the services serve, the image's UID, the autoscalers' targets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from outbox.cli import services as cli_services
from tests.deploy.deploy_files import (
    DOCKERFILE,
    K8S_DIR,
    Resource,
    component,
    container_env,
    dockerfile_stages,
    k8s_resources,
    load_yaml,
    manifest_files,
    named,
    only_container,
    pod_spec,
    resources_of,
)
from tests.deploy.served_probes import SERVICES, served

CUSTOM_KINDS = {"ScaledObject"}  # KEDA's CRD: tests/deploy/test_keda_scaled_object.py
# The oldest Kubernetes these manifests promise to fit, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.28.0", kubernetes_validate.latest_version() + ".0"]


def validate(resource: Resource, version: str) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


def core_resources() -> list[Resource]:
    return [r for r in k8s_resources() if r["kind"] not in CUSTOM_KINDS]


def deployments() -> dict[str, Resource]:
    return {component(d): d for d in resources_of("Deployment")}


def image_uid() -> int:
    user = [i for i in dockerfile_stages(DOCKERFILE.read_text())[-1] if i.keyword == "USER"]
    return int(user[-1].arguments.partition(":")[0])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_matches_the_kubernetes_schema(version: str) -> None:
    resources = core_resources()
    assert len(resources) >= 10
    for resource in resources:
        validate(resource, version)  # raises, naming the path, on the first error


def misspelt_probe() -> Resource:
    gateway = copy.deepcopy(named("Deployment", "outbox-gateway"))
    container = only_container(gateway)
    container["readinesProbe"] = container.pop("readinessProbe")
    return gateway


def replicas_as_text() -> Resource:
    relay = copy.deepcopy(named("Deployment", "outbox-relay"))
    relay["spec"]["replicas"] = "two"
    return relay


def hpa_target_without_name() -> Resource:
    hpa = copy.deepcopy(named("HorizontalPodAutoscaler", "outbox-gateway"))
    del hpa["spec"]["scaleTargetRef"]["name"]
    return hpa


def capabilities_as_a_string() -> Resource:
    job = copy.deepcopy(named("Job", "outbox-migrate"))
    only_container(job)["securityContext"]["capabilities"]["drop"] = "ALL"
    return job


@pytest.mark.parametrize(
    "break_it",
    [misspelt_probe, replicas_as_text, hpa_target_without_name, capabilities_as_a_string],
)
def test_a_broken_manifest_is_rejected(break_it: Callable[[], Resource]) -> None:
    broken = break_it()
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, KUBERNETES_VERSIONS[-1])


def test_manifests_name_no_namespace() -> None:
    for resource in k8s_resources():
        assert "namespace" not in resource["metadata"], resource["metadata"]["name"]


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization: dict[str, Any] = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in manifest_files()}
    assert listed == on_disk - {"secret.example.yaml"}
    assert {i["name"] for i in kustomization["images"]} == {"outbox"}


def test_gateway_relay_and_worker_are_separate_deployments_of_the_outbox_image() -> None:
    assert set(deployments()) == set(SERVICES)
    for name, deployment in deployments().items():
        container = only_container(deployment)
        assert container["image"].split(":")[0] == "outbox"
        assert container["command"] == ["outbox"]
        assert container["args"][0] == name
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("service", SERVICES)
def test_probes_point_at_paths_and_a_port_the_service_serves(service: str) -> None:
    container = only_container(deployments()[service])
    serves = served()[service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe_name, path in expected.items():
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path
        assert path in serves.get_paths, f"{service} does not serve {path}"
        port = ports.get(probe["port"], probe["port"])
        assert port == serves.port(container_env(container)), f"{service} {probe_name} port"


@pytest.mark.parametrize("service", ["relay", "worker"])
def test_relay_and_worker_commands_start_a_probe_server(service: str) -> None:
    # served_probes takes their paths from probe_app, which these functions serve.
    assert callable(getattr(cli_services, f"start_{service}_probes"))


def workloads() -> list[Resource]:
    return resources_of("Deployment") + resources_of("Job")


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_pod_runs_locked_down_as_the_image_user(workload: Resource) -> None:
    pod = pod_spec(workload)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == image_uid()
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    container = only_container(workload)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # A read-only root filesystem still needs somewhere for temporary files.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_container_has_resource_requests_and_limits(workload: Resource) -> None:
    resources = only_container(workload)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}, bound


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_container_reads_the_settings_and_its_own_database_login(workload: Resource) -> None:
    container = only_container(workload)
    sources = container["envFrom"]
    assert {"configMapRef", "secretRef"} == {key for source in sources for key in source}
    # Each workload reads only its own key of the database Secret (least-privilege logins).
    (database,) = [e for e in container["env"] if e["name"] == "OUTBOX_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"]["key"] == component(workload)
    for source in sources:
        secret = source.get("secretRef", {}).get("name")
        assert secret != database["valueFrom"]["secretKeyRef"]["name"], "no other logins"
    assert container_env(container)["OUTBOX_DATABASE_URL"].startswith("postgresql://")


def test_the_gateway_service_routes_to_the_gateway_pods_http_port() -> None:
    service = named("Service", "outbox-gateway")
    gateway = deployments()["gateway"]
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in only_container(gateway)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_each_deployment_has_a_disruption_budget_of_its_own() -> None:
    budgets = resources_of("PodDisruptionBudget")
    for name, deployment in deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} budgets"


def test_the_hpa_scales_the_gateway_deployment_which_leaves_replicas_to_it() -> None:
    (hpa,) = resources_of("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    gateway = deployments()["gateway"]
    assert (target["kind"], target["name"]) == ("Deployment", gateway["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway's replica count"


def test_the_relay_runs_two_replicas_for_takeover() -> None:
    assert deployments()["relay"]["spec"]["replicas"] >= 2


def test_the_migrate_job_runs_outbox_migrate_before_the_rollout() -> None:
    (job,) = resources_of("Job")
    container = only_container(job)
    assert container["command"] + container["args"] == ["outbox", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    annotations = job["metadata"]["annotations"]
    wave = int(annotations["argocd.argoproj.io/sync-wave"])
    for deployment in resources_of("Deployment"):
        later = deployment["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
        assert wave < int(later or 0), "the Job must come before the Deployments"
    for config in resources_of("ConfigMap") + resources_of("ServiceAccount"):
        earlier = int(config["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        assert earlier < wave, f"{config['metadata']['name']} must exist before the Job runs"
