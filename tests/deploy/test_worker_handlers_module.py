"""The handlers module the images' worker runs (`examples.reservations.handlers`): named alike in
compose and Kubernetes, importable from the image's layout, and doing its job on a real database.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import worker
from examples.reservations import create_tables, hold_seats, reservations, seats
from tests.deploy.deploy_files import COMPOSE_FILE, ROOT, load_yaml, named, only_container


def handler_modules(args: list[str]) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--handlers"]


def compose_modules() -> list[str]:
    return handler_modules(load_yaml(COMPOSE_FILE)["services"]["worker"]["command"])


def k8s_modules() -> list[str]:
    return handler_modules(only_container(named("Deployment", "outbox-worker"))["args"])


def test_compose_and_kubernetes_run_the_same_handlers_module() -> None:
    assert compose_modules() == k8s_modules() == ["examples.reservations.handlers"]


def test_module_registers_its_handlers_from_the_image_layout(tmp_path: Path) -> None:
    # The image holds the installed packages plus examples/ in its working directory, /app.
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (module,) = k8s_modules()
    script = (
        "import importlib, worker; "
        f"importlib.import_module({module!r}); "
        "print(sorted(worker.default_registry.handlers))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reservation.expired" in result.stdout


@pytest.fixture
def handlers_on(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from examples.reservations import handlers

    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    handlers.example_engine.cache_clear()
    yield
    handlers.example_engine().dispose()
    handlers.example_engine.cache_clear()


def expiry_job(payload: object) -> worker.Job:
    return worker.Job(
        id=1, job_id="expire-1", type="reservation.expired", payload=payload, key="k",
        attempt=1, max_attempts=5, headers={},
    )  # fmt: skip


def test_expiry_frees_the_seats_of_a_hold_once(engine: Engine, handlers_on: None) -> None:
    from examples.reservations.handlers import expire_reservation

    create_tables(engine)
    with engine.begin() as conn:
        hold = hold_seats(conn, event_id="evt-1", seat_ids=["A-1", "A-2"], hold_for=timedelta(0))

    first = expire_reservation(expiry_job({"reservation_id": hold.reservation_id}))
    again = expire_reservation(expiry_job({"reservation_id": hold.reservation_id}))

    assert first == {"reservation_id": hold.reservation_id, "released": True}
    assert again == {"reservation_id": hold.reservation_id, "released": False}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(seats)).scalar_one() == 0
        status = conn.execute(sa.select(reservations.c.status)).scalar_one()
    assert status == "EXPIRED"


def test_expiry_without_a_reservation_id_is_a_permanent_error(handlers_on: None) -> None:
    from examples.reservations.handlers import expire_reservation

    with pytest.raises(worker.PermanentError):
        expire_reservation(expiry_job({"seats": 2}))
