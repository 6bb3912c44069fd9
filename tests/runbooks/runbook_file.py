"""A runbook as the tests read it: title, sections, declared placeholders and fenced blocks.

Fenced blocks are ``sh`` (shell commands, run in order), ``sql`` (run in ``psql``) or ``text``
(illustrative output, never run). A ``sh`` block whose first line is ``# not-run-here: reason``
needs a real cluster: the tests stand in for it and count it. A ``sh`` block holding only
``outbox relay``, ``outbox worker --handlers ...`` or ``outbox gateway`` starts a service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
SECTIONS = ("Symptom", "Likely causes", "Diagnose", "Mitigate", "Follow-up")
LANGUAGES = frozenset({"sh", "sql", "text"})
NOT_RUN_HERE = "# not-run-here:"
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_]*)>")
SERVICE = re.compile(r"^outbox (relay|worker --handlers \S+|gateway)$")
_OPEN = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block, its text dedented to its fence."""

    language: str
    text: str
    section: str
    line: int
    """Line of the opening fence, 1-based."""

    @property
    def not_run_here(self) -> str | None:
        """The reason, for a block the tests cannot run here; else None."""
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        if self.language == "sh" and first.startswith(NOT_RUN_HERE):
            return first.removeprefix(NOT_RUN_HERE).strip()
        return None

    @property
    def commands(self) -> list[str]:
        """The block's lines that are not blank and not comments."""
        lines = (line.strip() for line in self.text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]

    @property
    def service(self) -> str | None:
        """``relay``, ``worker`` or ``gateway`` if the block starts that service; else None."""
        if self.language != "sh" or len(self.commands) != 1:
            return None
        found = SERVICE.match(self.commands[0])
        return found.group(1).split()[0] if found else None

    @property
    def runnable(self) -> bool:
        return self.language in {"sh", "sql"} and self.not_run_here is None

    @property
    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.text))

    def where(self, path: Path) -> str:
        return f"{path.name}:{self.line} ({self.section})"


@dataclass(frozen=True)
class Runbook:
    path: Path
    title: str
    preamble: str
    """Text between the title and the first section: it lists the placeholders."""
    sections: tuple[str, ...]
    blocks: tuple[Block, ...]
    prose: str
    """Everything outside fenced blocks."""

    @property
    def declared_placeholders(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.preamble))

    @property
    def used_placeholders(self) -> set[str]:
        return set().union(*(b.placeholders for b in self.blocks if b.language != "text"))

    @property
    def not_run_here(self) -> list[Block]:
        return [b for b in self.blocks if b.not_run_here is not None]


def runbook_paths() -> list[Path]:
    """Every runbook file (the README is the index, not a runbook)."""
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


def parse(path: Path) -> Runbook:
    """Read ``path``; a fence left open is an error."""
    lines = path.read_text().splitlines()
    title, section, preamble = "", "", []
    sections: list[str] = []
    blocks: list[Block] = []
    prose: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _OPEN.match(line)
        if opening:
            index = _read_block(path, lines, index, opening, section, blocks)
            continue
        prose.append(line)
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            section = line[3:].strip()
            sections.append(section)
        elif not section:
            preamble.append(line)
        index += 1
    return Runbook(path, title, "\n".join(preamble), tuple(sections), tuple(blocks),
                   "\n".join(prose))  # fmt: skip


def _read_block(
    path: Path, lines: list[str], start: int, opening: re.Match[str], section: str,
    blocks: list[Block],
) -> int:  # fmt: skip
    indent = len(opening.group("indent"))
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        if _CLOSE.match(lines[index]):
            text = "\n".join(body) + "\n"
            blocks.append(Block(opening.group("language"), text, section, start + 1))
            return index + 1
        body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
    raise ValueError(f"{path.name}:{start + 1}: a fenced block is never closed")
