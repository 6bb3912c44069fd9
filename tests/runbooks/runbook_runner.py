"""Running a runbook's blocks in order against a :class:`~tests.runbooks.runbook_stack.Stack`.

``sh`` blocks run with ``bash -euo pipefail`` in the stack's environment and working directory,
so any command that fails fails the test; ``sql`` blocks run in ``psql "$OUTBOX_DATABASE_URL"``
with ``ON_ERROR_STOP``. A block that starts a service leaves it running in the background. Each
``# not-run-here`` block calls the scenario's stand-in in its place (None: nothing to stand in
for). Placeholders are filled in from the scenario's values, some computed from earlier output.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.runbooks.runbook_file import RUNBOOKS, Block, Runbook, parse
from tests.runbooks.runbook_stack import Stack

StandIn = Callable[[], None] | None
Value = str | Callable[["Transcript"], str]


@dataclass(frozen=True)
class Step:
    block: Block
    text: str
    """The block as run: placeholders filled in."""
    output: str
    seconds: float


@dataclass
class Transcript:
    runbook: Runbook
    steps: list[Step] = field(default_factory=list)
    stood_in: int = 0

    def output(self, *sections: str) -> str:
        """Everything the blocks printed (in ``sections``, if given)."""
        chosen = [s for s in self.steps if not sections or s.block.section in sections]
        return "\n".join(s.output for s in chosen)


def run_runbook(
    name: str, stack: Stack, *, values: Mapping[str, Value] | None = None,
    stand_ins: Sequence[StandIn] = (),
) -> Transcript:  # fmt: skip
    """Run every block of ``runbooks/<name>`` in order; fail on the first that fails."""
    runbook = parse(RUNBOOKS / name)
    given = dict(values or {})
    assert runbook.used_placeholders == runbook.declared_placeholders == set(given), (
        f"{name}: placeholders used {sorted(runbook.used_placeholders)}, declared at the top "
        f"{sorted(runbook.declared_placeholders)}, given by the test {sorted(given)}"
    )
    assert len(stand_ins) == len(runbook.not_run_here), (
        f"{name} has {len(runbook.not_run_here)} not-run-here blocks; the test stands in for "
        f"{len(stand_ins)}"
    )
    transcript = Transcript(runbook)
    pending_stand_ins = list(stand_ins)
    for block in runbook.blocks:
        if block.not_run_here is not None:
            stand_in = pending_stand_ins.pop(0)
            if stand_in is not None:
                stand_in()
            transcript.stood_in += 1
        elif block.runnable:
            started = time.monotonic()
            text = _filled(block.text, given, transcript)
            output = _run(block, text, stack, runbook)
            step = Step(block, text, output, time.monotonic() - started)
            transcript.steps.append(step)
            # Captured by pytest, shown when the test fails: the session as an operator saw it.
            print(f"--- {block.where(runbook.path)}, {step.seconds:.1f} s\n{text}{output}")
    ran = len(transcript.steps) + transcript.stood_in
    assert ran == len([b for b in runbook.blocks if b.language != "text"])
    return transcript


def _filled(text: str, values: Mapping[str, Value], transcript: Transcript) -> str:
    for name, value in values.items():
        if f"<{name}>" in text:
            text = text.replace(f"<{name}>", value if isinstance(value, str) else value(transcript))
    return text


def _run(block: Block, text: str, stack: Stack, runbook: Runbook) -> str:
    where = block.where(runbook.path)
    if block.service is not None:
        service = stack.start(block.commands[0], kind=block.service)
        return f"{service.command}: running on port {service.port}"
    if block.language == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", text]
        done = subprocess.run(argv, cwd=stack.workdir, env=stack.env, capture_output=True,
                              text=True, timeout=90, check=False)  # fmt: skip
    else:
        argv = ["psql", stack.env["OUTBOX_DATABASE_URL"], "-X", "-v", "ON_ERROR_STOP=1",
                "-P", "pager=off", "-f", "-"]  # fmt: skip
        done = subprocess.run(argv, input=text, cwd=stack.workdir, env=stack.env,
                              capture_output=True, text=True, timeout=90, check=False)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{where} exited {done.returncode}:\n{text}\n---\n{output}"
    return output
