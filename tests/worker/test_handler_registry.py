"""Registering handlers and classifying how one attempt ends (no I/O)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import worker
from outbox.errors import InvalidJobError
from worker import HandlerRegistry, Job, PermanentError, Retry
from worker.attempt import TRACEBACK_LINES, Completed, Failed, Snoozed, run_attempt
from worker.handlers import HandlerSpec
from worker.json_text import to_json_text


def a_job(attempt: int = 1) -> Job:
    return Job(id=1, job_id="j1", type="t", payload={}, key="k", attempt=attempt,
               max_attempts=5, headers={})  # fmt: skip


def outcome_of(func: object) -> object:
    return run_attempt(HandlerSpec("t", func), a_job())  # type: ignore[arg-type]


def test_the_decorator_registers_the_function_and_returns_it_unchanged() -> None:
    registry = HandlerRegistry()

    def send(job: Job) -> None: ...

    assert registry.handler("email.send", max_attempts=3, rate_limit="2/s")(send) is send
    spec = registry.get("email.send")
    assert spec is not None
    assert (spec.func, spec.max_attempts, spec.rate_limit) == (send, 3, worker.RateLimit(2.0))


def test_worker_handler_registers_on_the_default_registry() -> None:
    @worker.handler("tests.default-registry")
    def handled(job: Job) -> None: ...

    spec = worker.default_registry.get("tests.default-registry")
    assert spec is not None
    assert spec.func is handled


def test_worker_cron_registers_on_the_default_registry() -> None:
    # A submodule named like a package attribute would replace it when imported.
    worker.cron("tests.default-cron", "*/5 * * * *", type="tests.default-registry")
    assert worker.default_registry.crons["tests.default-cron"].schedule == "*/5 * * * *"
    assert worker.handler == worker.default_registry.handler


def test_a_type_cannot_be_registered_twice() -> None:
    registry = HandlerRegistry()
    registry.handler("t")(lambda job: None)
    with pytest.raises(ValueError, match="'t' is already registered"):
        registry.handler("t")(lambda job: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be positive"),
        ({"timeout_seconds": -1}, "timeout_seconds must be positive"),
        ({"rate_limit": "fast"}, "is not like '10/s'"),
    ],
)
def test_a_bad_policy_is_refused_when_the_module_is_imported(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HandlerRegistry().handler("t", **options)  # type: ignore[arg-type]


def test_a_bad_type_name_is_refused_by_the_enqueue_rule() -> None:
    with pytest.raises(InvalidJobError, match="type"):
        HandlerRegistry().handler("no spaces please")


def test_a_bad_crontab_line_or_a_repeated_cron_name_is_refused_when_declared() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError):
        registry.cron("nightly", "61 * * * *", type="report")
    with pytest.raises(InvalidJobError, match="job_id"):  # too long once a fire time is added
        registry.cron("n" * 220, "0 3 * * *", type="report")
    registry.cron("nightly", "0 3 * * *", type="report")
    with pytest.raises(ValueError, match="'nightly' is already registered"):
        registry.cron("nightly", "0 4 * * *", type="report")


def test_a_returned_json_value_is_the_result() -> None:
    assert outcome_of(lambda job: {"sent": 3}) == Completed('{"sent":3}')
    assert outcome_of(lambda job: None) == Completed(None)


@pytest.mark.parametrize("result", [object(), float("inf"), {"text": "a\x00b"}])
def test_a_result_jsonb_cannot_store_completes_the_job_without_one(result: object) -> None:
    # The work is done: failing would run its side effects again for a storage problem.
    assert outcome_of(lambda job: result) == Completed(None)


def test_an_exception_fails_the_attempt_with_its_message_and_a_short_traceback() -> None:
    # Two functions calling each other: Python would fold one function's repeated frames.
    def ping(n: int) -> None:
        if n == 0:
            raise KeyError("customer 7")
        pong(n - 1)

    def pong(n: int) -> None:
        ping(n)

    outcome = outcome_of(lambda job: ping(30))
    assert isinstance(outcome, Failed)
    assert (outcome.error, outcome.permanent) == ("KeyError: 'customer 7'", False)
    assert outcome.traceback is not None
    lines = outcome.traceback.splitlines()
    assert len(lines) == TRACEBACK_LINES
    assert lines[-1] == "KeyError: 'customer 7'"


def test_permanent_error_and_retry_are_told_apart_from_failures() -> None:
    def permanent(job: Job) -> None:
        raise PermanentError("gone")

    def snooze(job: Job) -> None:
        raise Retry(after=90)

    outcome = outcome_of(permanent)
    assert isinstance(outcome, Failed)
    assert outcome.permanent
    assert outcome_of(snooze) == Snoozed(timedelta(seconds=90))
    assert Retry(after=timedelta(minutes=2)).after == timedelta(minutes=2)
    with pytest.raises(ValueError):
        Retry(after=-1)


def test_even_system_exit_in_a_handler_only_fails_the_attempt() -> None:
    def leave(job: Job) -> None:
        raise SystemExit(3)

    outcome = outcome_of(leave)
    assert isinstance(outcome, Failed)
    assert outcome.error == "SystemExit: 3"


def test_json_text_refuses_what_jsonb_refuses_and_keeps_the_rest() -> None:
    assert to_json_text({"emoji": "\U0001f600", "path": "C:\\u0000"}) == (
        '{"emoji":"\\ud83d\\ude00","path":"C:\\\\u0000"}'
    )
    for refused in (float("nan"), "\x00", {"k\x00": 1}, ["\ud800"], {1, 2}):
        with pytest.raises(ValueError):
            to_json_text(refused)
