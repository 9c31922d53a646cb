"""The gateway as people meet it, in Debian's Chromium against a real ``nakama up``: apps at
``http://<name>.localhost:<port>/`` (Chromium resolves ``*.localhost`` itself), a private app
sending a signed-out browser through Nakama's sign-in and back, a viewer who opens the app but
sees none of the project's settings, an internal app for any signed-in user, a public one for
anybody, and Nakama's session cookie never reaching an app (the review's finding H1)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.e2e.browser import chromium
from tests.e2e.nakama_server import NakamaProcess, running, write_tiny_kit
from tests.integration.test_gateway import ECHO_APP

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("gateway-browser")
    kit = write_tiny_kit(root / "kit", app=ECHO_APP)
    with running(root / "data", starter_kit=kit, uv_cache=root / "uv-cache") as server:
        for username, password in PASSWORDS.items():
            r = server.api.post("/api/v1/users", json={"username": username, "password": password})
            assert r.status_code == 201, r.text
        for name in ("secret-app", "team-app", "open-app"):
            assert server.api.post("/api/v1/projects", json={"name": name}).status_code == 201
        for name in ("secret-app", "team-app", "open-app"):
            server.wait_deployed(name, server.pipelines(name)[0]["commit"])
        server.api.patch("/api/v1/projects/team-app", json={"visibility": "internal"})
        server.api.patch("/api/v1/projects/open-app", json={"visibility": "public"})
        r = server.api.put("/api/v1/projects/secret-app/members/alice", json={"role": "viewer"})
        assert r.status_code == 200, r.text
        yield server


def app_url(nakama: NakamaProcess, name: str, path: str = "/") -> str:
    return f"http://{name}.localhost:{nakama.port}{path}"


def echoed(page: Page) -> dict[str, object]:
    """What the echo app saw of the request (it answers with JSON)."""
    return dict(json.loads(page.locator("body").inner_text()))


def sign_in(page: Page, username: str) -> None:
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button.primary")


def signed_in_context(browser: Browser, nakama: NakamaProcess, username: str) -> BrowserContext:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{nakama.url}/login")
    sign_in(page, username)
    page.wait_for_url(f"{nakama.url}/projects")
    page.close()
    return context


def test_a_signed_out_browser_signs_in_and_lands_on_the_page_it_asked_for(
    browser: Browser, nakama: NakamaProcess
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(app_url(nakama, "secret-app", "/report?week=49"))
        assert page.url.startswith(f"{nakama.url}/login"), page.url
        sign_in(page, "alice")
        page.wait_for_url(app_url(nakama, "secret-app", "/report?week=49"))
        seen = echoed(page)
        headers = seen["headers"]
        assert isinstance(headers, dict)
        assert headers["x-forwarded-user"] == "alice"
        assert "nakama" not in headers.get("cookie", "")
        assert "code=" not in str(seen["path"])
        # The app's cookie is the app host's alone, HttpOnly; Nakama's stays on Nakama's host.
        cookies = {(c["name"], c["domain"]): c for c in context.cookies()}
        app_cookie = cookies[("nakama_app", "secret-app.localhost")]
        assert app_cookie["httpOnly"] is True
        assert ("nakama_session", "127.0.0.1") in cookies
        assert [d for n, d in cookies if n == "nakama_session"] == ["127.0.0.1"]

        # A viewer opens the app, but the project's page shows no code, pipelines or settings.
        page.goto(f"{nakama.url}/projects/secret-app")
        assert page.locator("#viewer").is_visible()
        for section in ("#pipelines", "#variables", "#sharing", "#clone"):
            assert page.locator(section).count() == 0, section
        assert page.locator("#app-link").get_attribute("href") == app_url(nakama, "secret-app")
    finally:
        context.close()


def test_another_user_is_told_the_app_is_not_shared_with_them(
    browser: Browser, nakama: NakamaProcess
) -> None:
    context = signed_in_context(browser, nakama, "bob")
    try:
        page = context.new_page()
        response = page.goto(app_url(nakama, "secret-app"))
        assert response is not None and response.status == 403
        assert "not shared with you" in page.locator("body").inner_text()
        # An internal app opens for any signed-in user, through the same hop.
        page.goto(app_url(nakama, "team-app", "/"))
        page.wait_for_url(app_url(nakama, "team-app", "/"))
        assert echoed(page)["headers"]["x-forwarded-user"] == "bob"  # type: ignore[index]
    finally:
        context.close()


def test_a_public_app_opens_for_anybody_and_an_internal_one_asks_for_sign_in(
    browser: Browser, nakama: NakamaProcess
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(app_url(nakama, "open-app"))
        assert "x-forwarded-user" not in echoed(page)["headers"]  # type: ignore[operator]
        page.goto(app_url(nakama, "team-app"))
        assert page.url.startswith(f"{nakama.url}/login"), page.url
    finally:
        context.close()


def test_an_app_never_gets_nor_sets_nakamas_session_cookie(
    browser: Browser, nakama: NakamaProcess
) -> None:
    """Finding H1: an app a signed-in user opens must not receive their Nakama session."""
    context = signed_in_context(browser, nakama, "alice")
    try:
        before = {c["name"]: c["value"] for c in context.cookies(nakama.url)}
        assert "nakama_session" in before
        page = context.new_page()
        page.goto(app_url(nakama, "open-app", "/set-cookie"))
        page.goto(app_url(nakama, "open-app", "/"))
        headers = echoed(page)["headers"]
        assert isinstance(headers, dict)
        assert headers.get("cookie") == "theme=dark", headers.get("cookie")
        assert page.evaluate("document.cookie") == ""  # theme is HttpOnly; nothing of Nakama's
        after = {c["name"]: c["value"] for c in context.cookies(nakama.url)}
        assert after["nakama_session"] == before["nakama_session"]
        assert all(c["value"] != "forged" for c in context.cookies())
        # Her session still works on Nakama's pages.
        page.goto(f"{nakama.url}/projects")
        assert page.url == f"{nakama.url}/projects"
    finally:
        context.close()
