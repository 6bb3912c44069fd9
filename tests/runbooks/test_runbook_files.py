"""The runbooks' shape, checked without running them: what the scenario tests can rely on.

Every runbook has the five sections, only blocks the harness knows how to run, few declared
placeholders, few steps that need a cluster, and no command hidden in its prose, where no test
would run it; and every runbook is run by a scenario test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.runbooks.runbook_file import LANGUAGES, RUNBOOKS, SECTIONS, parse, runbook_paths

PATHS = runbook_paths()
ALLOWED_VARIABLES = {"OUTBOX_DATABASE_URL", "OUTBOX_GATEWAY_TOKENS",
                     "OUTBOX_GATEWAY_BACKLOG_LIMITS", "RELAY_URL", "WORKER_URL", "GATEWAY_URL",
                     "HANDLERS_MODULE", "NAMESPACE"}  # fmt: skip
MAX_NOT_RUN_HERE = 5
# Inline code that would be a command an operator runs: it belongs in a block the tests run.
COMMAND_IN_PROSE = re.compile(
    r"^(outbox(\s+\S+){3,}|kubectl\b|curl\b|jq\b|psql\s+(?!\"\$OUTBOX_DATABASE_URL\"$)|SELECT\b)"
)


def test_there_is_a_runbook_for_each_situation_of_the_operations_issue_and_gateway_errors() -> None:
    assert len(PATHS) == 10


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_a_runbook_has_a_title_and_the_five_sections_in_order(path: Path) -> None:
    runbook = parse(path)
    assert runbook.title
    assert runbook.sections == SECTIONS
    mitigate = runbook.prose.split("## Mitigate", 1)[1].split("## Follow-up", 1)[0]
    assert re.search(r"^1\. ", mitigate, re.MULTILINE), "Mitigate is a numbered list"
    assert [b for b in runbook.blocks if b.section in ("Diagnose", "Mitigate") and b.runnable]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_blocks_are_shell_sql_or_illustrative_text(path: Path) -> None:
    for block in parse(path).blocks:
        assert block.language in LANGUAGES, f"{block.where(path)}: ```{block.language}"
        if block.language == "text":
            assert not re.match(r"\s*(\$|outbox|psql|curl|kubectl|SELECT)", block.text), (
                f"{block.where(path)}: a command in a text block is never run"
            )


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_placeholders_are_few_and_listed_at_the_top(path: Path) -> None:
    runbook = parse(path)
    assert runbook.used_placeholders == runbook.declared_placeholders
    assert len(runbook.declared_placeholders) <= 3


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_shell_blocks_use_only_the_conventional_variables(path: Path) -> None:
    for block in parse(path).blocks:
        if block.language == "sh":
            used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", block.text))
            assert used <= ALLOWED_VARIABLES, f"{block.where(path)}: {used - ALLOWED_VARIABLES}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_no_command_hides_in_the_prose(path: Path) -> None:
    spans = re.findall(r"`([^`\n]+)`", parse(path).prose)
    hidden = [span for span in spans if COMMAND_IN_PROSE.match(span.strip())]
    assert not hidden, f"{path.name}: put these in a ```sh or ```sql block: {hidden}"


def test_steps_that_need_a_cluster_are_few_say_why_and_only_call_the_cluster() -> None:
    blocks = [(path, b) for path in PATHS for b in parse(path).not_run_here]
    assert len(blocks) <= MAX_NOT_RUN_HERE, [b.where(p) for p, b in blocks]
    for path, block in blocks:
        assert block.not_run_here, f"{block.where(path)}: say why it cannot run here"
        assert "kubectl" in block.text, block.where(path)
        for command in block.commands:
            assert not re.match(r"(outbox|psql|curl|jq)\b", command), (
                f"{block.where(path)}: {command!r} runs here: move it out of the not-run-here block"
            )
    assert max(len(parse(path).not_run_here) for path in PATHS) <= 2


def test_every_runbook_is_run_by_a_scenario_test() -> None:
    sources = "".join(p.read_text() for p in Path(__file__).parent.glob("test_runbooks_*.py"))
    run = set(re.findall(r'run_runbook\(\s*"([^"]+\.md)"', sources))
    assert run == {p.name for p in PATHS}


def test_the_index_links_every_runbook() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([a-z0-9-]+\.md)\)", index))
    assert linked == {p.name for p in PATHS}


def test_alerts_the_runbooks_name_are_shipped_alert_rules() -> None:
    rules = (RUNBOOKS.parent / "deploy" / "prometheus" / "outbox-alerts.yml").read_text()
    shipped = set(re.findall(r"alert:\s*(Outbox\w+)", rules))
    named = {name for path in PATHS for name in re.findall(r"`(Outbox[A-Z]\w+)`", path.read_text())}
    assert named
    assert named <= shipped, named - shipped
