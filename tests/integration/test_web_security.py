"""The web UI's sign-in, authorization and CSRF protection, against a real ``nakama up``.

A user's browser session sees and changes only that user's projects (another's pages, fragments,
log streams and forms all answer 404 and change nothing); every form needs the session's CSRF
token and a same-site origin; an admin sees every project."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, wait_for, write_tiny_kit

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def serve_with_users(
    root: Path, extra_env: dict[str, str] | None = None
) -> Iterator[NakamaProcess]:
    """A module's ``nakama up`` (tiny kit) with alice and bob, to ``yield from`` in a fixture."""
    kit = write_tiny_kit(root / "kit")
    server = NakamaProcess(
        data_dir=root / "data", starter_kit=kit, uv_cache=root / "uv-cache", extra_env=extra_env
    )
    server.start()
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
    yield server
    server.close()
    server.kill_apps()


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    yield from serve_with_users(tmp_path_factory.mktemp("web-security"))


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


class Browser:
    """An httpx client with a cookie jar, used like a browser: pages, forms, fragments."""

    def __init__(self, nakama: NakamaProcess) -> None:
        self.url = nakama.url
        self.http = httpx.Client(base_url=nakama.url, timeout=30, follow_redirects=False)

    def sign_in(self, username: str, password: str) -> httpx.Response:
        page = self.http.get("/login")
        return self.http.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        )

    def csrf(self) -> str:
        return csrf_of(self.http.get("/projects").text)

    def post(self, path: str, data: dict[str, str], **kwargs: object) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf(), **data}, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def alice(nakama: NakamaProcess) -> Iterator[Browser]:
    browser = Browser(nakama)
    assert browser.sign_in("alice", PASSWORDS["alice"]).status_code == 303
    yield browser
    browser.close()


@pytest.fixture
def bob(nakama: NakamaProcess) -> Iterator[Browser]:
    browser = Browser(nakama)
    assert browser.sign_in("bob", PASSWORDS["bob"]).status_code == 303
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def alices_project(nakama: NakamaProcess) -> str:
    """A project of alice's, made through the web form, with a variable and a first pipeline."""
    browser = Browser(nakama)
    try:
        assert browser.sign_in("alice", PASSWORDS["alice"]).status_code == 303
        r = browser.post("/projects", {"name": "alices-app"})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/projects/alices-app"
    finally:
        browser.close()
    wait_for(
        lambda: nakama.project("alices-app")["status"] == "running",
        timeout=120,
        what="alices-app to run",
    )
    r = nakama.api.put(
        "/api/v1/projects/alices-app/variables/GREETING", json={"value": "hello", "secret": False}
    )
    assert r.status_code == 200, r.text
    return "alices-app"


# --- sign-in ---------------------------------------------------------------------------------
def test_pages_need_a_signed_in_user(nakama: NakamaProcess) -> None:
    with httpx.Client(base_url=nakama.url, timeout=30) as anonymous:
        r = anonymous.get("/projects/alices-app")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/projects/alices-app"
        # An htmx poll from an expired session sends the whole page to the sign-in.
        r = anonymous.get("/projects/rows", headers={"HX-Request": "true"})
        assert r.status_code == 401
        assert r.headers["HX-Redirect"].startswith("/login")
        assert anonymous.get("/projects/x/pipelines/1/log/events").status_code == 401


def test_wrong_password_is_refused_and_signs_nobody_in(nakama: NakamaProcess) -> None:
    browser = Browser(nakama)
    try:
        r = browser.sign_in("alice", "not-her-password")
        assert r.status_code == 401
        assert "Wrong username or password." in r.text
        assert "not-her-password" not in r.text
        assert browser.sign_in("nobody", "whatever-password").status_code == 401
        assert browser.http.get("/projects").status_code == 303  # still signed out
    finally:
        browser.close()
    assert "not-her-password" not in nakama.log()


def test_admin_signs_in_with_the_admin_token(nakama: NakamaProcess) -> None:
    browser = Browser(nakama)
    try:
        r = browser.sign_in("admin", ADMIN_TOKEN)
        assert r.status_code == 303
        page = browser.http.get("/projects")
        assert page.status_code == 200
        assert "admin (admin)" in page.text
    finally:
        browser.close()
    assert ADMIN_TOKEN not in nakama.log()


def test_repeated_failures_are_throttled(nakama: NakamaProcess) -> None:
    r = nakama.api.post("/api/v1/users", json={"username": "carol", "password": "carol-pass-9"})
    assert r.status_code == 201
    browser = Browser(nakama)
    try:
        for _ in range(5):
            assert browser.sign_in("carol", "wrong-guess").status_code == 401
        blocked = browser.sign_in("carol", "carol-pass-9")
        assert blocked.status_code == 429
        assert "Too many failed attempts" in blocked.text
        # Other users are not locked out by carol's failures.
        assert browser.sign_in("bob", PASSWORDS["bob"]).status_code == 303
    finally:
        browser.close()


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(
    nakama: NakamaProcess,
) -> None:
    for given, expected in (
        ("/projects/anything", "/projects/anything"),
        ("//evil.example/x", "/projects"),
        ("https://evil.example/", "/projects"),
        ("/\\evil.example", "/projects"),
    ):
        browser = Browser(nakama)
        try:
            page = browser.http.get("/login")
            r = browser.http.post(
                "/login",
                data={
                    "username": "bob",
                    "password": PASSWORDS["bob"],
                    "next": given,
                    "csrf_token": csrf_of(page.text),
                },
            )
            assert r.status_code == 303
            assert r.headers["location"] == expected, given
        finally:
            browser.close()


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(
    nakama: NakamaProcess, bob: Browser
) -> None:
    assert bob.http.get("/projects").status_code == 200
    copied = dict(bob.http.cookies)
    r = bob.post("/logout", {})
    assert r.status_code == 303
    assert bob.http.get("/projects").status_code == 303
    # Someone who copied the cookie before the sign-out cannot use it afterwards.
    with httpx.Client(base_url=nakama.url, timeout=30, cookies=copied) as thief:
        assert thief.get("/projects").status_code == 303


def test_a_forged_session_cookie_is_ignored(nakama: NakamaProcess, bob: Browser) -> None:
    name, value = next(iter(dict(bob.http.cookies).items()))
    tampered = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=nakama.url, timeout=30, cookies={name: tampered}) as forger:
        assert forger.get("/projects").status_code == 303


def test_session_cookie_and_security_headers(nakama: NakamaProcess, bob: Browser) -> None:
    browser = Browser(nakama)
    try:
        page = browser.http.get("/login")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=lax" in cookie
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["x-frame-options"] == "DENY"
    finally:
        browser.close()
    assert "script-src 'self'" in bob.http.get("/projects").headers["content-security-policy"]


# --- CSRF ------------------------------------------------------------------------------------
def test_forms_without_the_sessions_csrf_token_are_refused(
    nakama: NakamaProcess, bob: Browser, alice: Browser
) -> None:
    attempts = {
        "no token": {"name": "csrf-none"},
        "wrong token": {"name": "csrf-wrong", "csrf_token": "x" * 43},
        # A token that is valid, but for another session (alice's).
        "another session's token": {"name": "csrf-other", "csrf_token": alice.csrf()},
    }
    for what, data in attempts.items():
        r = bob.http.post("/projects", data=data)
        assert r.status_code == 403, what
        assert "Request refused" in r.text
    # The right token, but sent from another site.
    r = bob.http.post(
        "/projects",
        data={"name": "csrf-origin", "csrf_token": bob.csrf()},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    names = [p["name"] for p in nakama.api.get("/api/v1/projects").json()]
    assert not [n for n in names if n.startswith("csrf-")], names


def test_sign_in_and_sign_out_forms_need_the_token_too(nakama: NakamaProcess, bob: Browser) -> None:
    with httpx.Client(base_url=nakama.url, timeout=30) as fresh:
        r = fresh.post("/login", data={"username": "bob", "password": PASSWORDS["bob"]})
        assert r.status_code == 403
    r = bob.http.post("/logout", data={})
    assert r.status_code == 403
    assert bob.http.get("/projects").status_code == 200  # still signed in


def test_htmx_requests_carry_the_token_in_a_header(bob: Browser) -> None:
    token = bob.csrf()
    r = bob.http.post("/logout", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert r.status_code == 303


# --- authorization ---------------------------------------------------------------------------
def test_another_users_project_is_invisible(bob: Browser, alices_project: str) -> None:
    name = alices_project
    listing = bob.http.get("/projects")
    assert listing.status_code == 200
    assert name not in listing.text
    assert name not in bob.http.get("/projects/rows").text
    for path in (
        f"/projects/{name}",
        f"/projects/{name}/live",
        f"/projects/{name}/app-log",
        f"/projects/{name}/pipelines/1",
        f"/projects/{name}/pipelines/1/log/events",
        f"/projects/{name}/delete",
    ):
        r = bob.http.get(path)
        assert r.status_code == 404, path
        assert "GREETING" not in r.text


def test_another_users_project_is_untouchable(
    nakama: NakamaProcess, bob: Browser, alices_project: str
) -> None:
    name = alices_project
    before = nakama.project(name)
    pipelines_before = nakama.pipelines(name)
    for path, data in (
        (f"/projects/{name}/rollback", {"pipeline_id": str(pipelines_before[-1]["id"])}),
        (f"/projects/{name}/variables", {"key": "STOLEN", "value": "1"}),
        (f"/projects/{name}/variables/GREETING/delete", {}),
        (f"/projects/{name}/delete", {"confirm": name}),
    ):
        r = bob.post(path, data)
        assert r.status_code == 404, path
    after = nakama.project(name)
    assert after["status"] == before["status"] != "deleting"
    assert after["deployed_commit"] == before["deployed_commit"]
    assert len(nakama.pipelines(name)) == len(pipelines_before)
    variables = nakama.api.get(f"/api/v1/projects/{name}/variables").json()
    assert [v["key"] for v in variables] == ["GREETING"]


def test_the_owner_and_an_admin_see_the_project(
    nakama: NakamaProcess, alice: Browser, alices_project: str
) -> None:
    page = alice.http.get(f"/projects/{alices_project}")
    assert page.status_code == 200
    assert "GREETING" in page.text
    admin = Browser(nakama)
    try:
        assert admin.sign_in("admin", ADMIN_TOKEN).status_code == 303
        listing = admin.http.get("/projects").text
        row = re.search(rf'<tr data-project="{alices_project}">\s*<td>(\w+)</td>', listing)
        assert row is not None and row.group(1) == "alice"  # the admin sees whose it is
        assert admin.http.get(f"/projects/{alices_project}").status_code == 200
    finally:
        admin.close()


def test_delete_needs_the_name_typed_back(
    nakama: NakamaProcess, alice: Browser, alices_project: str
) -> None:
    r = alice.post(f"/projects/{alices_project}/delete", {"confirm": "alices-ap"})
    assert r.status_code == 422
    assert "to confirm" in r.text
    assert nakama.project(alices_project)["status"] != "deleting"


def test_secret_values_are_never_shown_back(
    nakama: NakamaProcess, alice: Browser, alices_project: str
) -> None:
    secret = "s3cr3t-value-0123456789"
    r = alice.post(
        f"/projects/{alices_project}/variables",
        {"key": "API_KEY", "value": secret, "secret": "true"},
    )
    assert r.status_code == 303
    page = alice.http.get(f"/projects/{alices_project}")
    assert 'data-variable="API_KEY"' in page.text
    assert secret not in page.text
    assert "ending in" in page.text
    assert secret not in nakama.log()
    r = alice.post(f"/projects/{alices_project}/variables/API_KEY/delete", {})
    assert r.status_code == 303
    page = alice.http.get(f"/projects/{alices_project}").text
    assert "Variable API_KEY removed" in page  # the notice
    assert 'data-variable="API_KEY"' not in page


def test_create_form_explains_an_invalid_name(alice: Browser) -> None:
    r = alice.http.get("/projects/name-check", params={"name": "Bad_Name"})
    assert r.status_code == 200
    assert "data-invalid" in r.text
    assert "a name such as" in r.text
    r = alice.http.get("/projects/name-check", params={"name": "good-name"})
    assert "good name" in r.text and "data-invalid" not in r.text
    r = alice.post("/projects", {"name": "9lives"})
    assert r.status_code == 422
    assert "start with a letter" in r.text


def test_a_user_makes_their_own_api_token_once(nakama: NakamaProcess, alice: Browser) -> None:
    assert alice.http.post("/account/tokens", data={}).status_code == 403  # no CSRF token
    r = alice.post("/account/tokens", {})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    found = re.search(r'<pre id="new-token">(nkm_[\w-]+)</pre>', r.text)
    assert found is not None
    token = found.group(1)
    assert token not in alice.http.get("/account").text  # shown only that once
    with httpx.Client(base_url=nakama.url, headers={"Authorization": f"Bearer {token}"}) as api:
        mine = api.get("/api/v1/projects")
        assert mine.status_code == 200
        assert {p["owner"] for p in mine.json()} <= {"alice"}
        assert api.get("/api/v1/users").status_code == 403  # alice's, not an admin's
    assert token not in nakama.log()


def test_what_users_typed_is_shown_as_text_never_as_markup(
    alice: Browser, alices_project: str
) -> None:
    markup = '<script>alert("x")</script>'
    r = alice.post(f"/projects/{alices_project}/variables", {"key": "HTML", "value": markup})
    assert r.status_code == 303
    page = alice.http.get(f"/projects/{alices_project}").text
    assert markup not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert alice.post(f"/projects/{alices_project}/variables/HTML/delete", {}).status_code == 303
