"""The deployment files under test, read the way their tools read them.

YAML through ruamel.yaml (a dependency of check-jsonschema); the Dockerfile through a small reader
of its instruction lines (continuations joined, comments dropped); validators run as the real
command-line tools or libraries, offline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from outbox.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SCALED_OBJECT_SCHEMA = SCHEMAS / "keda-scaledobject-v1alpha1.schema.json"
VENV_BIN = Path(sys.executable).parent

Resource = dict[str, Any]


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path)


def load_all_yaml(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path) if doc]


def dump_yaml(data: Any, path: Path) -> None:
    YAML(typ="safe").dump(data, path)


def dump_all_yaml(docs: list[Any], path: Path) -> None:
    YAML(typ="safe").dump_all(docs, path)


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest, the example Secret included; not the kustomization."""
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_resources() -> list[Resource]:
    return [doc for path in manifest_files() for doc in load_all_yaml(path)]


def resources_of(kind: str) -> list[Resource]:
    return [r for r in k8s_resources() if r["kind"] == kind]


def named(kind: str, name: str) -> Resource:
    matches = [r for r in resources_of(kind) if r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def component(resource: Resource) -> str:
    return str(resource["metadata"]["labels"]["app.kubernetes.io/component"])


def pod_spec(workload: Resource) -> Resource:
    spec: Resource = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: Resource) -> Resource:
    containers: list[Resource] = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return containers[0]


def container_env(container: Resource) -> dict[str, str]:
    """The variables a container gets: ConfigMaps' and Secrets' keys, then its env (which wins).

    Secrets are read from secret.example.yaml, the example of what operators create.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(named("Secret", source["secretRef"]["name"])["stringData"])
    for variable in container.get("env", []):
        env[variable["name"]] = env_value(variable)
    return env


def env_value(variable: Resource) -> str:
    if "value" in variable:
        return str(variable["value"])
    source = variable["valueFrom"]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return str(named("Secret", ref["name"])["stringData"][ref["key"]])
    ref = source["configMapKeyRef"]
    return str(named("ConfigMap", ref["name"])["data"][ref["key"]])


def setting_names() -> set[str]:
    """The environment variable of every field of the settings model."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int

    def json_arguments(self) -> list[str]:
        """The exec form (``["outbox"]``) as a list; fails on the shell form."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"line {self.line}: not the exec (JSON) form"
        return [str(item) for item in value]


def dockerfile_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continuation, as docker does
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    return instructions


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The build stages, each from its FROM to the next (ARGs before the first FROM left out)."""
    stages: list[list[Instruction]] = []
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_args(text: str) -> dict[str, str]:
    """Default values of the ARGs declared before the first FROM (usable in FROM lines)."""
    values: dict[str, str] = {}
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            values[name] = value
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def env_keys(instruction: Instruction) -> Iterator[str]:
    """Names set by an ``ENV a=1 b=2`` instruction."""
    for match in re.finditer(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.arguments):
        yield match.group(1)


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
