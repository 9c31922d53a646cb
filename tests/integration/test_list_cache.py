"""The project list, a project, an access decision and a token's principal are served from
caches (issue 13), and the caches are never stale: every kind of change shows in the very next
answer, whoever made it, and two users never see each other's. The key is the database's
change counter (triggers on the watched tables), and for projects the runtime's state version
and the day too (nakama.db.changes, ProjectService.list_for and get, Sharing.access,
TokenStore.authenticate)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, event, update

from backend.local.runtime import LocalRuntime
from nakama.auth import TokenStore
from nakama.db.session import Database
from nakama.db.tables import ApiToken, Project, ProjectMember, User, WebSession
from tests.integration.test_quotas import World, local_settings, served


def listed(world: World, who: str) -> dict[str, dict[str, Any]]:
    r = world.apis[who].get("/api/v1/projects")
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()}


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    """Alice with a running app, and bob with none."""
    with served(local_settings(tmp_path, database_url), tmp_path) as world:
        world.user("alice"), world.user("bob")
        assert world.create("alice", "alice-app").status_code == 201
        world.settle("alice-app")
        yield world


def test_the_list_cache_is_fresh_after_every_kind_of_change(
    world: World, database_url: str
) -> None:
    assert set(listed(world, "alice")) == {"alice-app"}

    # The same list again is the cache's: no statement reads the projects table.
    again, statements = statements_of(world, lambda: listed(world, "alice"))
    assert set(again) == {"alice-app"}
    assert not [q for q in statements if "FROM projects" in q], statements

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


def statements_of(world: World, call: Any) -> tuple[Any, list[str]]:
    """``call()``'s result and the SQL statements it ran."""
    statements: list[str] = []
    engine = world.platform.db.engine
    record = lambda *args: statements.append(str(args[2]))  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        return call(), statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def read_again_from_cache(
    world: World, first: httpx.Client, second: httpx.Client, path: str, table: str
) -> None:
    """Both callers' first calls (each records its use: a change), then ``first``'s again:
    its next call reads nothing from ``table``."""
    for who in (first, second, first):
        assert who.get(path).status_code == 200
    answer, statements = statements_of(world, lambda: first.get(path))
    assert answer.status_code == 200
    assert not [q for q in statements if f"FROM {table}" in q], statements


def test_a_project_and_its_access_are_fresh_after_changes_by_anyone(
    world: World, database_url: str
) -> None:
    alice, bob = world.apis["alice"], world.apis["bob"]
    assert alice.get("/api/v1/projects/alice-app").status_code == 200
    assert bob.get("/api/v1/projects/alice-app").status_code == 404
    # (Each token's first call recorded its use: a change, which the next call reads.)
    assert alice.get("/api/v1/projects/alice-app").status_code == 200

    # Asked again: from the caches, no statement reads projects or members.
    answer, statements = statements_of(world, lambda: alice.get("/api/v1/projects/alice-app"))
    assert answer.status_code == 200
    assert not [q for q in statements if "FROM projects" in q or "project_members" in q]
    # ... and bob's cached "not found" stays his.
    assert bob.get("/api/v1/projects/alice-app").status_code == 404

    # Another process adds bob as a viewer: his next call sees the project, as a viewer.
    other = Database(database_url)
    try:
        with other.session() as s:
            bob_id = s.query(User.id).filter(User.username == "bob").scalar()
            s.add(ProjectMember(project="alice-app", user_id=bob_id, role="viewer"))
        seen = bob.get("/api/v1/projects/alice-app")
        assert seen.status_code == 200, seen.text
        assert seen.json()["role"] == "viewer"
        # A viewer may not change it; alice (owner) may.
        refused = bob.patch("/api/v1/projects/alice-app", json={"visibility": "internal"})
        assert refused.status_code == 403, refused.text

        # It changes the project's status elsewhere: both see the new one.
        with other.session() as s:
            s.execute(update(Project).where(Project.name == "alice-app").values(status_message="x"))
        for who in (alice, bob):
            assert who.get("/api/v1/projects/alice-app").json()["status_message"] == "x"

        # And takes bob off again: not found for him at once, alice unaffected.
        with other.session() as s:
            s.execute(delete(ProjectMember).where(ProjectMember.user_id == bob_id))
        assert bob.get("/api/v1/projects/alice-app").status_code == 404
        assert alice.get("/api/v1/projects/alice-app").status_code == 200
    finally:
        other.dispose()

    # The app's state, which no table holds.
    runtime = world.platform.runtime
    assert isinstance(runtime, LocalRuntime)
    assert runtime.sleep("alice-app")
    assert alice.get("/api/v1/projects/alice-app").json()["app_state"] == "sleeping"
    runtime.wake("alice-app")
    assert alice.get("/api/v1/projects/alice-app").json()["app_state"] == "running"


def test_a_token_revoked_or_changed_by_another_process_counts_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with served(local_settings(tmp_path, database_url), tmp_path) as world:
        world.user("alice"), world.user("bob")
        alice, bob = world.apis["alice"], world.apis["bob"]
        # Known tokens are not looked up again.
        read_again_from_cache(world, alice, bob, "/api/v1/projects", "api_tokens")

        other = Database(database_url)
        try:
            # Bob made an admin elsewhere: his next call is an admin's (alice's is not).
            with other.session() as s:
                s.execute(update(User).where(User.username == "bob").values(is_admin=True))
            assert bob.get("/api/v1/users").status_code == 200
            assert alice.get("/api/v1/users").status_code == 403

            # Alice's token revoked elsewhere: refused at once; bob's still works.
            with other.session() as s:
                alice_id = s.query(User.id).filter(User.username == "alice").scalar()
                s.execute(delete(ApiToken).where(ApiToken.user_id == alice_id))
            assert alice.get("/api/v1/projects").status_code == 401
            assert bob.get("/api/v1/projects").status_code == 200
        finally:
            other.dispose()


def web_session(url: str, username: str, password: str) -> httpx.Client:
    """A client signed in through the web form, as a browser is."""
    web = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    page = web.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "no CSRF field on the sign-in page"
    answer = web.post(
        "/login", data={"username": username, "password": password, "csrf_token": found[1]}
    )
    assert answer.status_code == 303, answer.text
    return web


def test_a_web_session_ended_or_expired_elsewhere_counts_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with served(local_settings(tmp_path, database_url), tmp_path) as world:
        for name in ("alice", "bob"):
            made = world.apis["admin"].post(
                "/api/v1/users", json={"username": name, "password": f"{name}-password-1"}
            )
            assert made.status_code == 201, made.text
        alice = web_session(world.url, "alice", "alice-password-1")
        bob = web_session(world.url, "bob", "bob-password-1")
        try:
            # Known sessions are not looked up again.
            read_again_from_cache(world, alice, bob, "/projects", "web_sessions")

            other = Database(database_url)
            try:
                # Alice's session expires (its row says so; nothing else changes): signed out.
                with other.session() as s:
                    alice_id = s.query(User.id).filter(User.username == "alice").scalar()
                    s.execute(
                        update(WebSession)
                        .where(WebSession.user_id == alice_id)
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
                    )
                ended = alice.get("/projects")
                assert ended.status_code in (302, 303), ended.text
                assert ended.headers["location"].startswith("/login")
                # Bob's goes on; then another process ends it (a sign-out elsewhere).
                assert bob.get("/projects").status_code == 200
                with other.session() as s:
                    s.execute(delete(WebSession))
                assert bob.get("/projects").status_code in (302, 303)
            finally:
                other.dispose()
        finally:
            alice.close()
            bob.close()


def test_a_cached_session_still_expires_on_time(database_url: str, tmp_path: Path) -> None:
    """Expiry moves no counter: the kept session carries its own expiry and is checked."""
    from nakama.sessions import SessionStore

    db = Database(database_url)
    try:
        db.migrate()
        tokens = TokenStore(db)
        with db.session() as s:
            s.add(User(username="alice", password_hash="x"))
        with db.read() as s:
            alice_id = s.query(User.id).filter(User.username == "alice").scalar()
        store = SessionStore(db, tokens, max_age_s=1)
        session_id = store.open(alice_id)
        seen = store.principal(session_id)
        assert seen is not None and seen.username == "alice"
        assert store.principal(session_id) is not None  # from the cache now
        time.sleep(1.2)
        assert store.principal(session_id) is None
    finally:
        db.dispose()


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
