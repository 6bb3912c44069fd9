import sqlalchemy as sa
from sqlalchemy.engine import Engine


def test_each_test_gets_a_migrated_database_of_its_own(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox_jobs (job_id, type, payload, key) VALUES ('a', 't', '{}', 'a')"
            )
        )
        assert conn.execute(sa.text("SELECT count(*) FROM outbox_jobs")).scalar_one() == 1


def test_the_clone_starts_empty(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outbox_jobs")).scalar_one() == 0
