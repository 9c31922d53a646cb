"""The project list is served from a cache (issue 13), and the cache is never stale: every kind
of change shows in the very next list, whoever made it, and two users never see each other's
lists. The key is the database's change counter (triggers on the watched tables), the
runtime's state version and the day (nakama.db.changes, ProjectService.list_for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, update

from backend.local.runtime import LocalRuntime
from nakama.db.session import Database
from nakama.db.tables import Project
from tests.integration.test_quotas import World, local_settings, served


def listed(world: World, who: str) -> dict[str, dict[str, Any]]:
    r = world.apis[who].get("/api/v1/projects")
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()}


def test_the_list_cache_is_fresh_after_every_kind_of_change(
    database_url: str, tmp_path: Path
) -> None:
    with served(local_settings(tmp_path, database_url), tmp_path) as world:
        world.user("alice"), world.user("bob")
        assert world.create("alice", "alice-app").status_code == 201
        world.settle("alice-app")
        assert set(listed(world, "alice")) == {"alice-app"}

        # The same list again is the cache's: no statement reads the projects table.
        statements: list[str] = []
        engine = world.platform.db.engine
        record = lambda *args: statements.append(str(args[2]))  # noqa: E731
        event.listen(engine, "before_cursor_execute", record)
        try:
            again = listed(world, "alice")
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert set(again) == {"alice-app"}
        assert not [q for q in statements if "FROM projects" in q], statements
        assert [q for q in statements if "change_counter" in q], statements

        # Bob's new project: in his list at once, never in alice's.
        assert world.create("bob", "bob-app").status_code == 201
        assert set(listed(world, "bob")) == {"bob-app"}
        assert set(listed(world, "alice")) == {"alice-app"}

        # Bob shares it with alice: her next list has it, with her role.
        shared = world.apis["bob"].put(
            "/api/v1/projects/bob-app/members/alice", json={"role": "viewer"}
        )
        assert shared.status_code == 200, shared.text
        assert listed(world, "alice")["bob-app"]["role"] == "viewer"

        # Through the API: the visibility.
        changed = world.apis["alice"].patch(
            "/api/v1/projects/alice-app", json={"visibility": "internal"}
        )
        assert changed.status_code == 200, changed.text
        assert listed(world, "alice")["alice-app"]["visibility"] == "internal"

        # A write by another process on the same database (another Nakama, the CLI).
        other = Database(database_url)
        try:
            with other.session() as s:
                s.execute(
                    update(Project).where(Project.name == "alice-app").values(status_message="hi")
                )
        finally:
            other.dispose()
        assert listed(world, "alice")["alice-app"]["status_message"] == "hi"

        # The app's state, which no table holds: asleep, then awake again.
        runtime = world.platform.runtime
        assert isinstance(runtime, LocalRuntime)
        assert listed(world, "alice")["alice-app"]["app_state"] == "running"
        assert runtime.sleep("alice-app")
        assert listed(world, "alice")["alice-app"]["app_state"] == "sleeping"
        runtime.wake("alice-app")
        assert listed(world, "alice")["alice-app"]["app_state"] == "running"

        # Bob takes alice off his project again; and deletes it.
        removed = world.apis["bob"].delete("/api/v1/projects/bob-app/members/alice")
        assert removed.status_code == 204, removed.text
        assert set(listed(world, "alice")) == {"alice-app"}
        assert set(listed(world, "bob")) == {"bob-app"}


def test_the_change_triggers_survive_a_restart_and_a_copied_table(
    database_url: str, tmp_path: Path
) -> None:
    """A trigger lost (as an Alembic batch migration on SQLite copies a table without them) is
    made again at the next start, and counting goes on."""
    from sqlalchemy import text

    from nakama.db.changes import WATCHED, ensure_triggers

    db = Database(database_url)
    try:
        db.migrate()
        before = db.changes()
        with db.session() as s:
            s.add(Project(name="alice-app", status="ready", branch="main", hook_token="t" * 20))
        assert db.changes() > before
        with db.engine.begin() as c:
            if c.dialect.name == "sqlite":
                for op in ("insert", "update", "delete"):
                    c.execute(text(f"DROP TRIGGER nakama_changes_projects_{op}"))
            else:
                c.execute(text("DROP TRIGGER nakama_changes ON projects"))
        dropped = db.changes()
        with db.session() as s:
            s.execute(update(Project).values(status_message="unseen"))
        assert db.changes() == dropped  # what the cache would miss, without the fix below
        db.migrate()  # the next start
        with db.session() as s:
            s.execute(update(Project).values(status_message="seen"))
        assert db.changes() > dropped
        with db.engine.begin() as c:
            assert ensure_triggers(c) == 0  # all there again: nothing more to make
            if c.dialect.name == "sqlite":
                names = c.execute(text("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'"))
            else:
                names = c.execute(
                    text(
                        "SELECT tgrelid::regclass::text FROM pg_trigger"
                        " WHERE tgname = 'nakama_changes'"
                    )
                )
            assert set(WATCHED) <= {row[0] for row in names}
    finally:
        db.dispose()
