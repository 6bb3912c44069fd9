"""The real ``outbox`` program, run as operators run it, against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

import gateway
from outbox import migrations_runner

OUTBOX = str(Path(sys.executable).parent / "outbox")


def run_outbox(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"OUTBOX_DATABASE_URL": database_url, "COLUMNS": "200"} | env
    return subprocess.run(
        [OUTBOX, *args], capture_output=True, text=True, env=environment, timeout=60, check=False
    )


@pytest.fixture
def three_jobs(engine: Engine) -> list[str]:
    with engine.begin() as conn:
        return gateway.enqueue_many(
            conn,
            [
                gateway.JobSpec("email.send", {"n": 1}, job_id="job-a", key="user-1"),
                gateway.JobSpec("email.send", {"n": 2}, job_id="job-b", key="user-2"),
                gateway.JobSpec("sms.send", {"n": 3}, job_id="job-c", key="user-1"),
            ],
        )


def test_migrate_brings_an_empty_database_to_head(empty_database_url: str) -> None:
    first = run_outbox("migrate", database_url=empty_database_url)
    again = run_outbox("migrate", database_url=empty_database_url)
    assert first.returncode == 0, first.stderr
    assert f"database at revision {migrations_runner.head_revisions()[0]}" in first.stdout
    assert again.returncode == 0
    stats = run_outbox("stats", "--json", database_url=empty_database_url)
    assert json.loads(stats.stdout)["total"] == 0


def test_stats_json_counts_jobs_per_status(database_url: str, three_jobs: list[str]) -> None:
    result = run_outbox("stats", "--json", database_url=database_url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["counts"]["PENDING"] == 3
    assert stats["counts"]["COMPLETED"] == 0
    assert stats["oldest_pending_age_seconds"] >= 0


def test_stats_table_shows_each_status(database_url: str, three_jobs: list[str]) -> None:
    result = run_outbox("stats", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "PENDING" in result.stdout
    assert "DEAD" in result.stdout


def test_jobs_show_json_has_the_contract_fields(database_url: str, three_jobs: list[str]) -> None:
    result = run_outbox("jobs", "show", "job-b", "--json", database_url=database_url)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert {k: job[k] for k in ("job_id", "type", "key", "status", "attempts")} == {
        "job_id": "job-b", "type": "email.send", "key": "user-2", "status": "PENDING",
        "attempts": 0,
    }  # fmt: skip
    assert "max_attempts" in job
    assert "last_error" in job


def test_jobs_show_exits_1_for_an_unknown_job(database_url: str) -> None:
    result = run_outbox("jobs", "show", "nope", "--json", database_url=database_url)
    assert result.returncode == 1
    assert "no job with job_id 'nope'" in result.stderr
    assert result.stdout == ""


def test_jobs_list_filters_and_pages_newest_first(database_url: str, three_jobs: list[str]) -> None:
    first = run_outbox("jobs", "list", "--key", "user-1", "--limit", "1", "--json",
                       database_url=database_url)  # fmt: skip
    page = json.loads(first.stdout)
    assert [j["job_id"] for j in page["jobs"]] == ["job-c"]
    second = run_outbox("jobs", "list", "--key", "user-1", "--limit", "1", "--json",
                        "--before-id", str(page["next"]), database_url=database_url)  # fmt: skip
    assert [j["job_id"] for j in json.loads(second.stdout)["jobs"]] == ["job-a"]
    typed = run_outbox("jobs", "list", "--type", "sms.send", "--status", "PENDING", "--json",
                       database_url=database_url)  # fmt: skip
    assert [j["job_id"] for j in json.loads(typed.stdout)["jobs"]] == ["job-c"]


def test_jobs_list_time_range_needs_a_timezone(database_url: str, three_jobs: list[str]) -> None:
    naive = run_outbox("jobs", "list", "--since", "2020-01-01T00:00:00", database_url=database_url)
    assert naive.returncode == 2
    assert "--since" in naive.stderr
    future = run_outbox("jobs", "list", "--since", "2999-01-01T00:00:00Z", "--json",
                        database_url=database_url)  # fmt: skip
    assert json.loads(future.stdout)["jobs"] == []


def test_a_bad_setting_prints_one_line_naming_it(database_url: str) -> None:
    result = run_outbox("stats", database_url=database_url, OUTBOX_MAX_ATTEMPTS="zero")
    assert result.returncode == 2
    assert "OUTBOX_MAX_ATTEMPTS" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@/outbox?host={tmp_path}"  # no server on that socket
    result = run_outbox("stats", database_url=url)
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr
