"""The schema migrates and the stores work on both SQLite and a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from nakama.auth import TokenStore, new_token
from nakama.db.session import Database
from nakama.db.tables import Base, Project, WebhookEvent


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def test_migration_creates_every_table_and_is_repeatable(db: Database) -> None:
    db.migrate()  # a second run is a no-op
    names = set(inspect(db.engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= names
    assert "alembic_version" in names


def test_dedup_key_is_unique(db: Database) -> None:
    def event() -> WebhookEvent:
        return WebhookEvent(
            endpoint="build-image",
            dedup_key="build-image:k",
            event_kind="Push Hook",
            project="p",
            body="{}",
        )

    with db.session() as s:
        s.add(event())
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(event())
    with db.session() as s:
        assert len(s.scalars(select(WebhookEvent)).all()) == 1


def test_project_names_are_unique(db: Database) -> None:
    with db.session() as s:
        s.add(Project(name="a", status="running", branch="main", hook_token="t"))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Project(name="a", status="running", branch="main", hook_token="u"))


def test_tokens_are_stored_hashed(db: Database) -> None:
    store = TokenStore(db)
    token = new_token()
    store.add(token, name="admin", is_admin=True)
    assert store.has_admin()
    found = store.authenticate(token)
    assert found is not None and found.is_admin
    assert store.authenticate(token + "x") is None
    assert store.authenticate("") is None
    with db.engine.connect() as conn:
        dump = str(conn.exec_driver_sql("SELECT * FROM api_tokens").all())
    assert token not in dump


def test_migrations_match_the_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_read_session_sees_commits_runs_beside_a_writer_and_refuses_changes(
    db: Database,
) -> None:
    with db.session() as s:
        s.add(Project(name="alice-app", status="ready", branch="main", hook_token="a" * 20))
    # A writer holds the writers' turn (on SQLite a process-wide lock) with bob's row unsaved:
    # a read in another thread still answers, with what is committed.
    writing, done = threading.Event(), threading.Event()
    seen: list[list[str]] = []

    def writer() -> None:
        with db.session() as s:
            s.add(Project(name="bob-app", status="ready", branch="main", hook_token="b" * 20))
            s.flush()
            writing.set()
            done.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(30)

        def read() -> None:
            with db.read() as r:
                seen.append(list(r.scalars(select(Project.name).order_by(Project.name))))

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "the read waited for the writer"
        assert seen == [["alice-app"]]  # bob's row is not committed yet
    finally:
        done.set()
        thread.join(30)
    with db.read() as s:
        assert list(s.scalars(select(Project.name).order_by(Project.name))) == [
            "alice-app",
            "bob-app",
        ]
    with pytest.raises(RuntimeError, match="read session changed rows"), db.read() as s:
        row = s.scalar(select(Project).where(Project.name == "alice-app"))
        assert row is not None
        row.status = "deleting"
    with db.read() as s:
        assert s.scalar(select(Project.status).where(Project.name == "alice-app")) == "ready"
