"""App sessions and their one-time sign-in codes on a real database (SQLite and PostgreSQL):
a code works once, only before it expires, only for its app, only while the web session it came
from lasts; an app session is no web session, and ends with the web session it came from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from nakama.auth import TokenStore
from nakama.db.session import Database
from nakama.sessions import SessionStore


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[SessionStore, int]]:
    db = Database(database_url)
    db.migrate()
    tokens = TokenStore(db)
    user, _token = tokens.create_user("alice", "alice-password-1")
    yield SessionStore(db, tokens, max_age_s=3600), user.id
    db.dispose()


def test_a_code_works_once_for_its_app_only(store: tuple[SessionStore, int]) -> None:
    sessions, user_id = store
    web = sessions.open(user_id)
    code = sessions.issue_app_code(web, app="report", ttl_s=60)
    assert sessions.redeem_app_code(code, app="other") is None  # and it is used up now
    assert sessions.redeem_app_code(code, app="report") is None
    code = sessions.issue_app_code(web, app="report", ttl_s=60)
    app_session = sessions.redeem_app_code(code, app="report")
    assert app_session is not None
    assert sessions.redeem_app_code(code, app="report") is None  # replayed
    assert sessions.redeem_app_code("forged", app="report") is None
    principal = sessions.principal(app_session, app="report")
    assert principal is not None and principal.username == "alice"
    assert sessions.principal(app_session, app="other") is None
    assert sessions.principal(app_session) is None  # no key to Nakama's own pages


def test_an_expired_code_is_refused(store: tuple[SessionStore, int]) -> None:
    sessions, user_id = store
    code = sessions.issue_app_code(sessions.open(user_id), app="report", ttl_s=0.2)
    time.sleep(0.4)
    assert sessions.redeem_app_code(code, app="report") is None


def test_signing_out_ends_the_app_sessions_and_codes_made_from_it(
    store: tuple[SessionStore, int],
) -> None:
    sessions, user_id = store
    web = sessions.open(user_id)
    first = sessions.redeem_app_code(sessions.issue_app_code(web, app="a", ttl_s=60), app="a")
    pending = sessions.issue_app_code(web, app="b", ttl_s=60)
    other_web = sessions.open(user_id)
    other = sessions.redeem_app_code(sessions.issue_app_code(other_web, app="a", ttl_s=60), app="a")
    assert first is not None and other is not None
    generation = sessions.generation
    sessions.close(web)
    assert sessions.generation > generation  # cached checks are stale now
    assert sessions.principal(first, app="a") is None
    assert sessions.redeem_app_code(pending, app="b") is None
    assert sessions.principal(other, app="a") is not None  # another sign-in's goes on


def test_concurrent_redeems_of_one_code_open_one_session(
    store: tuple[SessionStore, int],
) -> None:
    sessions, user_id = store
    code = sessions.issue_app_code(sessions.open(user_id), app="report", ttl_s=60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: sessions.redeem_app_code(code, app="report"), range(8)))
    assert sum(r is not None for r in results) == 1, results
