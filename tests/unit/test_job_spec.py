"""``gateway.JobSpec``: a value, built by keyword or position, that nobody can change in place."""

from __future__ import annotations

import inspect

import pytest

from gateway import JobSpec, enqueue


def test_a_job_spec_cannot_be_changed_in_place_and_replace_gives_a_changed_copy() -> None:
    spec = JobSpec("email.send", {"to": "a@example.com"}, job_id="j-1")
    with pytest.raises(AttributeError):
        spec.priority = 5  # type: ignore[misc]

    louder = spec._replace(priority=5)

    assert (spec.priority, louder.priority) == (0, 5)
    assert louder == JobSpec("email.send", {"to": "a@example.com"}, job_id="j-1", priority=5)


def test_a_job_spec_defaults_every_field_as_enqueue_does() -> None:
    spec = JobSpec("t", {})
    defaults = {name: p.default for name, p in inspect.signature(enqueue).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    for name in JobSpec._fields[2:]:
        assert getattr(spec, name) == defaults[name], name
