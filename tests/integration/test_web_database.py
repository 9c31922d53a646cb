"""The project page's Database card, against a real ``nakama up`` with the operator's PostgreSQL
server configured: alice, the owner, makes her app's database, rotates it and drops it only with
the project's name typed back; bob as a stranger gets 404, as a developer sees the card without
its buttons and gets 403; the password is on no page. Without a server the card says what the
operator sets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import NakamaProcess, wait_for
from tests.integration.test_app_databases import (  # noqa: F401
    ADMIN_PASSWORD,
    addon_server,
    roles_and_databases,
)
from tests.integration.test_web_security import PASSWORDS, Browser, serve_with_users

PROJECT = "web-db"


@pytest.fixture(scope="module")
def nakama(
    tmp_path_factory: pytest.TempPathFactory,
    addon_server: str,  # noqa: F811
) -> Iterator[NakamaProcess]:
    yield from serve_with_users(
        tmp_path_factory.mktemp("web-database"),
        extra_env={"NAKAMA_ADDONS__POSTGRES_URL": addon_server},
    )


def signed_in(nakama: NakamaProcess, who: str) -> Browser:
    browser = Browser(nakama)
    assert browser.sign_in(who, PASSWORDS[who]).status_code == 303
    return browser


def page_after(browser: Browser, response_status: int) -> str:
    assert response_status == 303
    return browser.http.get(f"/projects/{PROJECT}").text


def test_the_owner_makes_rotates_and_drops_the_database(
    nakama: NakamaProcess,
    addon_server: str,  # noqa: F811
) -> None:
    alice, bob = signed_in(nakama, "alice"), signed_in(nakama, "bob")
    try:
        assert alice.post("/projects", {"name": PROJECT}).status_code == 303
        wait_for(
            lambda: nakama.project(PROJECT)["status"] == "running", timeout=120, what="deployed"
        )
        page = alice.http.get(f"/projects/{PROJECT}").text
        assert 'id="database"' in page and "Create database" in page

        assert bob.post(f"/projects/{PROJECT}/database", {}).status_code == 404
        assert roles_and_databases(addon_server, PROJECT) == []

        page = page_after(alice, alice.post(f"/projects/{PROJECT}/database", {}).status_code)
        assert f"Database nakama_{PROJECT} made" in page
        assert f"nakama_{PROJECT}_1" in page and "Rotate credentials" in page
        assert len(roles_and_databases(addon_server, PROJECT)) == 3
        page = page_after(alice, alice.post(f"/projects/{PROJECT}/database/rotate", {}).status_code)
        assert f"now connects as nakama_{PROJECT}_2" in page
        assert "postgresql://" not in page and ADMIN_PASSWORD not in page

        # Bob as a developer: the card without its buttons; his posts are refused.
        shared = nakama.api.put(
            f"/api/v1/projects/{PROJECT}/members/bob", json={"role": "developer"}
        )
        assert shared.status_code == 200, shared.text
        seen = bob.http.get(f"/projects/{PROJECT}").text
        assert f"nakama_{PROJECT}_2" in seen and "Rotate credentials" not in seen
        assert bob.post(f"/projects/{PROJECT}/database/rotate", {}).status_code == 403
        refused = bob.post(f"/projects/{PROJECT}/database/delete", {"confirm": PROJECT})
        assert refused.status_code == 403

        # A wrong name typed back drops nothing; the right one drops it all.
        wrong = alice.post(f"/projects/{PROJECT}/database/delete", {"confirm": "web-d"})
        assert "the database was not dropped" in page_after(alice, wrong.status_code)
        assert len(roles_and_databases(addon_server, PROJECT)) == 3
        right = alice.post(f"/projects/{PROJECT}/database/delete", {"confirm": PROJECT})
        assert "Database dropped" in page_after(alice, right.status_code)
        assert roles_and_databases(addon_server, PROJECT) == []
    finally:
        alice.http.close()
        bob.http.close()


def test_without_a_server_the_card_says_what_to_set(tmp_path: Path) -> None:
    for nakama in serve_with_users(tmp_path):
        alice = signed_in(nakama, "alice")
        try:
            assert alice.post("/projects", {"name": PROJECT}).status_code == 303
            page = alice.http.get(f"/projects/{PROJECT}").text
            assert 'id="database-not-configured"' in page
            assert "NAKAMA_ADDONS__POSTGRES_URL" in page and "Create database" not in page
        finally:
            alice.http.close()
