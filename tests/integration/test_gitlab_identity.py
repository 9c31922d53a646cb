"""GitLab sign-in links a Nakama user to GitLab's immutable user id, not its username (review
M10): when alice renames on GitLab and someone registers "alice" afterwards, the newcomer gets
a local user of their own and alice, under her new name, still gets hers. Links made by name
before migration 0009 are claimed only by a GitLab account older than the local user.

On both databases: the store's decisions, and migration 0009 up and down. Through the GitLab
fake's OAuth provider and a real cluster-mode server: the rename and the newcomer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nakama.auth import GitLabIdentity, TokenStore
from nakama.db.session import Database
from nakama.db.tables import User
from tests.fakes.gitlab import GitLabFake
from tests.fakes.kubernetes import kube_fake, kubeconfig
from tests.integration.test_secrets_at_rest import alembic
from tests.integration.test_web_gitlab_signin import browser, session_of, signin_setup

__all__ = ["kube_fake", "kubeconfig"]  # the fixtures

LONG_AGO = datetime(2015, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def linked(db: Database) -> dict[str, tuple[int | None, str | None]]:
    """local username -> (GitLab id, GitLab username)."""
    with db.session() as s:
        rows = s.execute(select(User.username, User.gitlab_id, User.gitlab_username)).all()
    return {name: (gid, gname) for name, gid, gname in rows}


def test_a_renamed_name_registered_again_gets_its_own_user(db: Database) -> None:
    store = TokenStore(db)
    alice = store.gitlab_user(GitLabIdentity(id=101, username="alice", created_at=LONG_AGO))
    assert alice.username == "alice"
    # alice renames on GitLab; bob registers the name she left.
    renamed = store.gitlab_user(GitLabIdentity(id=101, username="alice-smith"))
    assert renamed.user_id == alice.user_id
    newcomer = store.gitlab_user(GitLabIdentity(id=202, username="alice"))
    assert newcomer.user_id != alice.user_id
    assert newcomer.username == "alice-2"  # "alice" is taken locally, by alice
    assert linked(db)["alice"] == (101, "alice-smith")
    assert linked(db)["alice-2"] == (202, "alice")
    # Each keeps their own from now on, whatever the names.
    assert store.gitlab_user(GitLabIdentity(id=202, username="alice")).user_id == newcomer.user_id
    assert store.gitlab_user(GitLabIdentity(id=101, username="Alice-Smith")).user_id == (
        alice.user_id
    )
    assert store.gitlab_username_of(alice.user_id or 0) == "Alice-Smith"


def test_a_link_by_name_from_before_the_upgrade_goes_only_to_an_older_account(
    db: Database,
) -> None:
    now = datetime.now(UTC)
    with db.session() as s:  # linked by name only, as before migration 0009
        s.add(User(username="carol", gitlab_username="carol", created_at=now - timedelta(days=30)))
        s.add(User(username="dave", gitlab_username="dave", created_at=now - timedelta(days=30)))
    store = TokenStore(db)
    # carol's own account, made long before she first signed in to Nakama: her link.
    carol = store.gitlab_user(GitLabIdentity(id=303, username="carol", created_at=LONG_AGO))
    assert carol.username == "carol"
    assert linked(db)["carol"] == (303, "carol")
    # "dave" was renamed and registered again last week by bob: a new account, a new user.
    bob = store.gitlab_user(
        GitLabIdentity(id=404, username="dave", created_at=now - timedelta(days=7))
    )
    assert bob.username == "dave-2"
    assert linked(db)["dave"] == (None, None)  # dave's old link by name is given up, not given
    # An account whose age GitLab does not say claims nothing either.
    with db.session() as s:
        s.add(User(username="erin", gitlab_username="erin", created_at=now))
    assert store.gitlab_user(GitLabIdentity(id=505, username="erin")).username == "erin-2"


def test_migration_0009_adds_a_unique_gitlab_id_and_goes_back(db: Database) -> None:
    alembic(db, "downgrade", "0008")
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (username, gitlab_username, is_admin, created_at) "
                "VALUES ('alice', 'alice', false, CURRENT_TIMESTAMP)"
            )
        )
    alembic(db, "upgrade", "0009")
    assert linked(db) == {"alice": (None, "alice")}  # no id until her next sign-in
    with db.session() as s:
        s.add(User(username="bob", gitlab_id=7))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(User(username="mallory", gitlab_id=7))
    alembic(db, "downgrade", "0008")
    with db.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("users")}
        rows = conn.execute(sa.text("SELECT username, gitlab_username FROM users")).all()
        token_columns = {c["name"] for c in sa.inspect(conn).get_columns("api_tokens")}
    assert "gitlab_id" not in columns and "last_used_at" not in token_columns
    assert sorted(rows) == [("alice", "alice"), ("bob", None)]
    alembic(db, "upgrade", "head")


def test_through_gitlab_sign_in_a_rename_does_not_hand_the_account_over(
    gitlab_fake: GitLabFake, kubeconfig: Path, tmp_path: Path
) -> None:
    alice = gitlab_fake.add_user("alice", name="Alice")
    gitlab_fake.oauth.sign_in("alice")
    with signin_setup(gitlab_fake, tmp_path) as ready:
        nakama = ready.nakama

        def sign_in() -> int:
            with browser(nakama.url) as client:
                assert client.get("/login/gitlab").url.path == "/projects"
                principal = nakama.sessions.principal(session_of(client)["sid"])
            assert principal is not None and principal.user_id is not None
            return principal.user_id

        alices_user = sign_in()
        with gitlab_fake.lock:
            alice.username = "alice-renamed"  # alice renames on GitLab
        bob = gitlab_fake.add_user("alice", name="Bob")  # bob registers her old name
        assert bob.id != alice.id
        gitlab_fake.oauth.sign_in("alice")  # bob's browser
        bobs_user = sign_in()
        assert bobs_user != alices_user
        gitlab_fake.oauth.sign_in("alice-renamed")
        assert sign_in() == alices_user
        assert nakama.users() == ["admin", "alice", "alice-2"]
        assert nakama.platform.tokens.gitlab_username_of(alices_user) == "alice-renamed"
        assert nakama.platform.tokens.gitlab_username_of(bobs_user) == "alice"
