"""docs/guarantees.md links each promise to tests: every file and test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guarantees.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def test_every_test_the_guarantees_page_names_exists() -> None:
    references = REFERENCE.findall(PAGE.read_text())
    assert len(references) >= 20
    for path, name in references:
        source = ROOT / path
        assert source.is_file(), f"{path} does not exist"
        if name:
            assert re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE), (
                f"{path} has no test {name}"
            )


def test_every_promise_has_a_test() -> None:
    promises = PAGE.read_text().split("## Not promised")[0].split("\n### ")[1:]
    assert len(promises) == 6
    for promise in promises:
        assert REFERENCE.search(promise), f"no test named under: {promise.splitlines()[0]}"
