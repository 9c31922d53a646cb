"""Tokens and users in the web UI, against a real ``nakama up``, driven as a browser does (a cookie
jar, the pages' CSRF tokens): alice lists and revokes her own tokens on her account page and
sees nobody else's; a token id of bob's is a missing one to her (404); a revoked token stops the
API and git at once. An admin sees and revokes anyone's tokens and manages users on the Users
page (create with a generated password shown once, reset a password, make and unmake admins,
remove with the name typed back); bob, no admin, can neither see nor use any of it."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nakama.auth import TokenStore
from nakama.db.session import Database
from nakama.db.tables import User
from nakama.errors import Conflict
from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, write_tiny_kit
from tests.integration.test_web_security import Browser, csrf_of

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
_TOKEN_ROW = re.compile(r'<tr data-token="(\d+)">\s*<td>([^<]*)')


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("web-tokens-users")
    server = NakamaProcess(
        data_dir=root / "data", starter_kit=write_tiny_kit(root / "kit"), uv_cache=root / "uv"
    )
    server.start()
    tokens = {}
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        tokens[username] = r.json()["token"]
    server.tokens = tokens  # type: ignore[attr-defined]
    with api(server, tokens["alice"]) as as_alice:
        r = as_alice.post("/api/v1/projects", json={"name": "alices-app"})
    assert r.status_code == 201, r.text
    yield server
    server.close()
    server.kill_apps()


def api(nakama: NakamaProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=nakama.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def new_token(nakama: NakamaProcess, token: str, username: str, name: str) -> httpx.Response:
    with api(nakama, token) as client:
        return client.post(f"/api/v1/users/{username}/tokens", json={"name": name})


def works(nakama: NakamaProcess, token: str) -> bool:
    with api(nakama, token) as client:
        status = client.get("/api/v1/projects").status_code
    assert status in (200, 401)
    return status == 200


def git_reaches(nakama: NakamaProcess, token: str, project: str) -> bool:
    """``git ls-remote`` of ``project`` with ``token`` as the password (in a header, not argv)."""
    basic = base64.b64encode(f"x:{token}".encode()).decode()
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }
    done = subprocess.run(
        ["git", "ls-remote", f"{nakama.url}/git/{project}.git"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def signed_in(nakama: NakamaProcess, username: str, password: str) -> Browser:
    browser = Browser(nakama)
    r = browser.sign_in(username, password)
    assert r.status_code == 303, r.text
    return browser


@pytest.fixture
def alice(nakama: NakamaProcess) -> Iterator[Browser]:
    browser = signed_in(nakama, "alice", PASSWORDS["alice"])
    yield browser
    browser.close()


@pytest.fixture
def bob(nakama: NakamaProcess) -> Iterator[Browser]:
    browser = signed_in(nakama, "bob", PASSWORDS["bob"])
    yield browser
    browser.close()


@pytest.fixture
def admin(nakama: NakamaProcess) -> Iterator[Browser]:
    browser = signed_in(nakama, "admin", ADMIN_TOKEN)  # the admin signs in with the admin token
    yield browser
    browser.close()


def token_rows(html: str) -> dict[int, str]:
    return {int(i): name.strip() for i, name in _TOKEN_ROW.findall(html)}


def api_tokens(nakama: NakamaProcess, username: str) -> dict[int, str]:
    return {t["id"]: t["name"] for t in nakama.api.get(f"/api/v1/users/{username}/tokens").json()}


# --- tokens on the account page ------------------------------------------------------------------
def test_alice_lists_and_revokes_her_own_tokens_only(nakama: NakamaProcess, alice: Browser) -> None:
    tokens = nakama.tokens  # type: ignore[attr-defined]
    bobs = new_token(nakama, tokens["bob"], "bob", "bobs-laptop")
    assert bobs.status_code == 201
    bobs_laptop = bobs.json()["token"]
    bobs_id = next(i for i, n in api_tokens(nakama, "bob").items() if n == "bobs-laptop")

    made = alice.post("/account/tokens", {"name": "laptop"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    found = re.search(r'<pre id="new-token">(nkm_[\w-]+)</pre>', made.text)
    assert found is not None
    laptop = found.group(1)
    assert works(nakama, laptop) and git_reaches(nakama, laptop, "alices-app")

    page = alice.http.get("/account")
    assert page.status_code == 200
    rows = token_rows(page.text)
    assert rows == api_tokens(nakama, "alice")  # every one of hers, and only hers
    assert sorted(rows.values()) == ["alice", "laptop"]
    assert bobs_id not in rows and "bobs-laptop" not in page.text
    assert laptop not in page.text and tokens["alice"] not in page.text
    laptop_id = next(i for i, n in rows.items() if n == "laptop")
    row = page.text[page.text.index(f'data-token="{laptop_id}"') :].split("</tr>")[0]
    assert "ago" in row  # made, and used just now by the checks above
    assert f'action="/account/tokens/{laptop_id}/revoke"' in row

    # bob's token id is a missing one to alice, and stays working; so does a form without CSRF.
    refused = alice.post(f"/account/tokens/{bobs_id}/revoke", {})
    assert refused.status_code == 404
    assert "bobs-laptop" not in refused.text
    assert alice.http.post(f"/account/tokens/{laptop_id}/revoke", data={}).status_code == 403
    assert works(nakama, bobs_laptop) and works(nakama, laptop)

    revoked = alice.post(f"/account/tokens/{laptop_id}/revoke", {})
    assert revoked.status_code == 303 and revoked.headers["location"] == "/account#tokens"
    assert not works(nakama, laptop)
    assert not git_reaches(nakama, laptop, "alices-app")
    assert works(nakama, tokens["alice"])  # her other token is untouched
    assert laptop_id not in token_rows(alice.http.get("/account").text)
    assert alice.post(f"/account/tokens/{laptop_id}/revoke", {}).status_code == 404


def test_an_admin_sees_and_revokes_anyones_tokens(
    nakama: NakamaProcess, admin: Browser, alice: Browser
) -> None:
    tokens = nakama.tokens  # type: ignore[attr-defined]
    bobs_ci = new_token(nakama, tokens["bob"], "bob", "bobs-ci").json()["token"]
    page = admin.http.get("/users/bob/tokens")
    assert page.status_code == 200
    rows = token_rows(page.text)
    assert rows == api_tokens(nakama, "bob")
    ci_id = next(i for i, n in rows.items() if n == "bobs-ci")
    # Not for alice: the admin's pages, and the admin's forms, are missing ones to her.
    assert alice.http.get("/users/bob/tokens").status_code == 404
    assert alice.post(f"/users/bob/tokens/{ci_id}/revoke", {}).status_code == 404
    assert works(nakama, bobs_ci)

    r = admin.post(f"/users/bob/tokens/{ci_id}/revoke", {})
    assert r.status_code == 303
    assert not works(nakama, bobs_ci)
    assert works(nakama, tokens["bob"])
    assert ci_id not in token_rows(admin.http.get("/users/bob/tokens").text)
    # An id under the wrong user is a missing one, for the admin too.
    alices_id = next(iter(api_tokens(nakama, "alice")))
    assert admin.post(f"/users/bob/tokens/{alices_id}/revoke", {}).status_code == 404
    assert alices_id in api_tokens(nakama, "alice")


# --- the Users page ---------------------------------------------------------------------------
def test_bob_can_neither_see_nor_use_the_users_page(
    nakama: NakamaProcess, bob: Browser, admin: Browser
) -> None:
    assert 'href="/users"' in admin.http.get("/projects").text  # the admin's nav has it
    assert 'href="/users"' not in bob.http.get("/projects").text
    before = nakama.api.get("/api/v1/users").json()
    for path in ("/users", "/users/alice/tokens", "/users/alice/remove"):
        assert bob.http.get(path).status_code == 404, path
    for path, form in (
        ("/users", {"username": "mallory", "password": ""}),
        ("/users/alice/password", {"password": "bob-chose-this-1"}),
        ("/users/bob/admin", {"is_admin": "true"}),
        ("/users/alice/remove", {"confirm": "alice", "projects": "delete"}),
    ):
        r = bob.post(path, form)
        assert r.status_code == 404, path
        assert "nkm_" not in r.text
    assert nakama.api.get("/api/v1/users").json() == before  # nobody made, changed or removed
    assert nakama.project("alices-app")["status"] != "deleting"
    signed_in(nakama, "alice", PASSWORDS["alice"]).close()  # her password is hers still
    with api(nakama, nakama.tokens["bob"]) as as_bob:  # type: ignore[attr-defined]
        assert as_bob.get("/api/v1/users").status_code == 403
        assert as_bob.patch("/api/v1/users/bob", json={"is_admin": True}).status_code == 403


def test_an_admin_creates_resets_promotes_and_removes_users(
    nakama: NakamaProcess, admin: Browser
) -> None:
    # Create with a generated password: shown once, in the answer, and it signs carol in.
    made = admin.post("/users", {"username": "carol", "password": ""})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    password = re.search(r'<pre id="new-password">([^<]+)</pre>', made.text)
    token = re.search(r'<pre id="new-token">(nkm_[\w-]+)</pre>', made.text)
    assert password and token
    generated, carols_token = password.group(1), token.group(1)
    assert len(generated) >= 16
    assert works(nakama, carols_token)
    carol = signed_in(nakama, "carol", generated)
    listing = admin.http.get("/users").text
    assert generated not in listing and carols_token not in listing  # shown that once only
    assert re.search(r'<tr data-user="carol">.*?<td>0</td>', listing, re.S)  # no projects yet

    # Refusals say why and make nothing.
    short = admin.post("/users", {"username": "dave", "password": "Xq7-zz"})
    assert short.status_code == 422 and "8 to 1024 characters" in short.text
    assert "Xq7-zz" not in short.text  # the password is not echoed
    taken = admin.post("/users", {"username": "carol", "password": "carols-second-1"})
    assert taken.status_code == 409 and "already exists" in taken.text
    users = {u["username"]: u for u in nakama.api.get("/api/v1/users").json()}
    assert "dave" not in users and not users["carol"]["is_admin"]

    # A reset ends carol's web sessions; the new password works, the old one not.
    reset = admin.post("/users/carol/password", {"password": ""})
    assert reset.status_code == 200
    new = re.search(r'<pre id="new-password">([^<]+)</pre>', reset.text)
    assert new and new.group(1) != generated
    assert carol.http.get("/projects").status_code == 303  # signed out
    assert carol.sign_in("carol", generated).status_code == 401
    assert carol.sign_in("carol", new.group(1)).status_code == 303
    assert works(nakama, carols_token)  # tokens stay, as with the API
    chosen = admin.post("/users/carol/password", {"password": "carols-chosen-pw"})
    assert chosen.status_code == 200 and "carols-chosen-pw" not in chosen.text
    carol.close()
    carol = signed_in(nakama, "carol", "carols-chosen-pw")

    # Make and unmake an admin: it holds at once, for her session and her tokens.
    assert admin.post("/users/carol/admin", {"is_admin": "true"}).status_code == 303
    assert 'href="/users"' in carol.http.get("/projects").text
    with api(nakama, carols_token) as as_carol:
        assert as_carol.get("/api/v1/users").status_code == 200
        assert admin.post("/users/carol/admin", {"is_admin": "false"}).status_code == 303
        assert as_carol.get("/api/v1/users").status_code == 403
        assert carol.http.get("/users").status_code == 404
        # carols-app, for the removal below.
        assert as_carol.post("/api/v1/projects", json={"name": "carols-app"}).status_code == 201
    # The admin user stays an admin (the admin token belongs to it), from the web and the API.
    r = admin.post("/users/admin/admin", {"is_admin": "false"})
    assert r.status_code == 303
    assert "stays an admin" in admin.http.get("/users").text
    assert nakama.api.patch("/api/v1/users/admin", json={"is_admin": False}).status_code == 409
    r = nakama.api.patch("/api/v1/users/carol", json={"is_admin": True})
    assert r.status_code == 200 and r.json()["is_admin"] is True
    r = nakama.api.patch("/api/v1/users/carol", json={"is_admin": False})
    assert r.status_code == 200 and r.json()["is_admin"] is False
    assert nakama.api.patch("/api/v1/users/nobody", json={"is_admin": True}).status_code == 404

    # Remove: the page names her projects; the name must be typed back.
    page = admin.http.get("/users/carol/remove")
    assert page.status_code == 200 and "carols-app" in page.text
    wrong = admin.post("/users/carol/remove", {"confirm": "caro", "projects": "transfer"})
    assert wrong.status_code == 422 and "to confirm" in wrong.text
    assert works(nakama, carols_token)
    assert admin.post("/users/admin/remove", {"confirm": "admin"}).status_code == 409
    gone = admin.post("/users/carol/remove", {"confirm": "carol", "projects": "transfer"})
    assert gone.status_code == 303
    assert "Now yours: carols-app" in admin.http.get("/users").text
    assert not works(nakama, carols_token)
    assert carol.http.get("/projects").status_code == 303
    carol.close()
    assert nakama.project("carols-app")["owner"] == "admin"
    assert "carol" not in {u["username"] for u in nakama.api.get("/api/v1/users").json()}
    assert admin.http.get("/users/carol/remove").status_code == 404

    # Each change is in the log, with who made it; no password or token is.
    log = nakama.log_path.read_text(errors="replace")
    for line in (
        "user created from the web",
        "password reset from the web",
        "admin changed from the web",
        "user removed from the web",
    ):
        assert line in log
    assert "by=admin" in log
    for secret in (generated, new.group(1), "carols-chosen-pw", carols_token):
        assert secret not in log


def test_the_last_admin_stays_one(tmp_path: Path) -> None:
    """Only reachable when the ``admin`` user is no admin (a database edited by hand): then
    the one admin left cannot be unmade."""
    db = Database(f"sqlite:///{tmp_path / 'nakama.db'}")
    db.migrate()
    store = TokenStore(db)
    store.ensure_admin_user()
    store.create_user("carol")
    store.set_admin("carol", True)
    with db.session() as s:
        s.query(User).filter(User.username == "admin").update({"is_admin": False})
    with pytest.raises(Conflict, match="last admin"):
        store.set_admin("carol", False)
    assert store.set_admin("admin", True).is_admin
    assert not store.set_admin("carol", False).is_admin
    db.dispose()


def test_a_cross_site_form_changes_nothing(nakama: NakamaProcess, admin: Browser) -> None:
    page = admin.http.get("/users")
    token = csrf_of(page.text)
    r = admin.http.post(
        "/users",
        data={"username": "eve", "password": "", "csrf_token": token},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert admin.http.post("/users", data={"username": "eve"}).status_code == 403
    assert "eve" not in {u["username"] for u in nakama.api.get("/api/v1/users").json()}
