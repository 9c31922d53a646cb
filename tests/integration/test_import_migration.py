"""Migration 0010 (projects.source_url, projects.main_file) on SQLite and PostgreSQL: existing
projects keep their rows and get NULL (the starter kit's app.py); down and up again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from backend.projects import recorded_branch, recorded_main_file
from nakama.db.session import Database
from tests.integration.test_secrets_at_rest import alembic


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def columns(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns("projects")}


def test_migration_0010_adds_the_source_columns_and_goes_back(db: Database) -> None:
    alembic(db, "downgrade", "0009")
    assert not {"source_url", "main_file"} & columns(db)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO projects (name, status, branch, hook_token, deployed_seq, "
                "visibility, created_at, updated_at) VALUES ('old', 'running', 'main', 't', 0, "
                "'private', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    alembic(db, "upgrade", "0010")
    assert {"source_url", "main_file"} <= columns(db)
    assert recorded_main_file(db, "old") is None  # the runtimes run app.py
    assert recorded_branch(db, "old") == "main"
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE projects SET main_file = 'streamlit_app.py', "
                "source_url = 'https://example.com/a.git' WHERE name = 'old'"
            )
        )
    assert recorded_main_file(db, "old") == "streamlit_app.py"
    alembic(db, "downgrade", "0009")
    assert not {"source_url", "main_file"} & columns(db)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name, branch FROM projects")).all() == [("old", "main")]
    alembic(db, "upgrade", "head")
    assert recorded_main_file(db, "old") is None and recorded_branch(db, "missing") is None
