"""The ``outbox`` command: the composition root, the one place that wires the services together.

It alone builds settings and engines, and it is the one written-down exception to the rule that
the core imports none of the services (see the import-linter contracts in ``pyproject.toml``).
"""

from __future__ import annotations

from outbox.cli.app import app, main

__all__ = ["app", "main"]
