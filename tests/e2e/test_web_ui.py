"""The web UI through a project's whole life, in Debian's Chromium driven by Playwright, against a
real ``nakama up``: sign in, create (an invalid name explained before submit), watch the first
pipeline go green, open the app, push a change and see its pipeline, set variables, roll back,
delete with the name typed back.

Screenshots of each page go to $NAKAMA_SCREENSHOTS (docs/screenshots to refresh the README's),
else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import chromium
from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    fetch_text,
    git,
    git_push,
    running,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

PASSWORD = "alice-password-1"
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    with running(tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache) as server:
        yield server


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NAKAMA_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def snap(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert (folder / f"{name}.png").stat().st_size > 5000


def pipeline_row(page: Page, number: int) -> str:
    return f"#pipelines tr[data-pipeline='{number}']"


def test_a_project_from_sign_in_to_delete(
    nakama: NakamaProcess, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    r = nakama.api.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 201, r.text
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    # Sign in: the list sends a stranger to the sign-in page first.
    page.goto(f"{nakama.url}/projects")
    expect(page).to_have_url(re.compile(r"/login\?next=/projects$"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong-password")
    page.click("button.primary")
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    errors.remove(
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    )
    snap(page, shots, "01-sign-in")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    expect(page).to_have_url(f"{nakama.url}/projects")
    expect(page.get_by_test_id("signed-in-as")).to_have_text("alice")

    # Create: an invalid name is explained while typing, and the button waits for a good one.
    page.fill("#project-name", "Sales_Dashboard")
    expect(page.locator("#name-help")).to_contain_text("a name such as 'sales-dashboard'")
    expect(page.locator("#create-button")).to_be_disabled()
    snap(page, shots, "02-create-invalid-name")
    page.fill("#project-name", "hello-web")
    expect(page.locator("#name-help")).to_contain_text("is a good name")
    expect(page.locator("#create-button")).to_be_enabled()
    page.click("#create-button")
    expect(page).to_have_url(f"{nakama.url}/projects/hello-web")
    expect(page.locator(".flash")).to_contain_text("created")

    # The first pipeline goes green on the page by itself (htmx polling).
    first = page.locator(pipeline_row(page, 1))
    expect(first).to_have_attribute("data-status", "success")
    expect(page.locator("#deployed-commit")).not_to_have_text("—")
    expect(page.locator("#last-push")).to_contain_text("build")
    snap(page, shots, "03-project")
    page.goto(f"{nakama.url}/projects")
    expect(page.locator("tr[data-project=hello-web] .badge")).to_have_text("running")
    snap(page, shots, "04-projects")
    page.go_back()
    commit_v1 = nakama.project("hello-web")["deployed_commit"]

    # Open the app.
    with context.expect_page() as opened:
        page.click("#app-link")
    app = opened.value
    expect(app.locator("body")).to_have_text("v1")
    app.close()

    # The pipeline's own page shows its log (streamed; finished here).
    page.click(f"{pipeline_row(page, 1)} a")
    expect(page.locator("#log-state")).to_have_text("finished")
    expect(page.locator("#pipeline-log")).not_to_be_empty()
    snap(page, shots, "05-pipeline-log")
    page.go_back()

    # A token for git, made on the account page, then a push: a new pipeline, the app serves it.
    page.get_by_test_id("signed-in-as").click()
    page.click("#new-token-button")
    alice_token = page.locator("#new-token").inner_text()
    assert alice_token.startswith("nkm_")
    page.goto(f"{nakama.url}/projects/hello-web")
    url = nakama.project("hello-web")["clone_url"].replace(
        "http://", f"http://alice:{alice_token}@"
    )
    work = tmp_path / "work"
    git("clone", "-q", url, str(work), cwd=tmp_path)
    app_py = work / "app.py"
    app_py.write_text(app_py.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    git("commit", "-qam", "v2", cwd=work)
    git_push(work)
    commit_v2 = git("rev-parse", "HEAD", cwd=work)
    second = page.locator(pipeline_row(page, 2))
    expect(second).to_have_attribute("data-status", "success")
    expect(second).to_contain_text(commit_v2[:8])
    expect(second).to_contain_text("deployed")
    app_url = nakama.project("hello-web")["app_url"]
    wait_for(lambda: fetch_text(app_url) == "v2", timeout=60, what="the app to serve v2")

    # Variables: a plain one and a secret, which is never shown back.
    page.fill("#variable-form input[name=key]", "GREETING")
    page.fill("#variable-form input[name=value]", "hello")
    page.click("#variable-form button")
    expect(page.locator(".flash")).to_contain_text("GREETING saved")
    page.fill("#variable-form input[name=key]", "API_KEY")
    page.fill("#variable-form input[name=value]", "s3cr3t-value-0123456789")
    page.check("#variable-form input[name=secret]")
    page.click("#variable-form button")
    expect(page.locator("tr[data-variable=API_KEY]")).to_contain_text("secret ending in")
    assert "s3cr3t-value-0123456789" not in page.content()
    page.locator("#variables").scroll_into_view_if_needed()
    snap(page, shots, "06-variables")

    # Roll back to the first build: a new pipeline deploys the old commit again.
    page.locator(f"{pipeline_row(page, 1)} button").click()
    expect(page.locator(".flash")).to_contain_text("Rolling back")
    wait_for(
        lambda: nakama.project("hello-web")["deployed_commit"] == commit_v1,
        timeout=60,
        what="the rollback to deploy v1",
    )
    wait_for(lambda: fetch_text(app_url) == "v1", timeout=60, what="the app to serve v1 again")
    expect(page.locator("#last-push")).to_contain_text("rollback")
    rollback = page.locator(pipeline_row(page, 3))
    expect(rollback).to_have_attribute("data-status", "success")
    expect(rollback).to_contain_text("rollback to pipeline #1")
    expect(page.locator("#deployed-commit")).to_have_text(commit_v1[:8])
    snap(page, shots, "07-rolled-back")

    # Delete: the button waits for the name typed back.
    page.click("a.button.danger")
    expect(page.locator("#delete-button")).to_be_disabled()
    page.fill("#confirm-name", "hello-we")
    expect(page.locator("#delete-button")).to_be_disabled()
    page.fill("#confirm-name", "hello-web")
    expect(page.locator("#delete-button")).to_be_enabled()
    snap(page, shots, "08-delete")
    page.click("#delete-button")
    expect(page).to_have_url(f"{nakama.url}/projects")
    expect(page.locator(".flash")).to_contain_text("being deleted")
    expect(page.locator("tr[data-project=hello-web]")).to_have_count(0)
    assert (
        httpx.get(f"{nakama.url}/api/v1/projects/hello-web", headers=nakama.api.headers).status_code
        == 404
    )

    assert not errors, errors
    context.close()


def sign_in(browser: Browser, nakama: NakamaProcess, username: str, password: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{nakama.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button.primary")
    expect(page.get_by_test_id("signed-in-as")).to_contain_text(username)
    return page


def test_tokens_users_import_and_a_phones_width(
    nakama: NakamaProcess, browser: Browser, shots: Path
) -> None:
    for name in ("alice", "bob"):
        r = nakama.api.post("/api/v1/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text

    # alice's account: a named token, shown once, then listed (never its value).
    alice = sign_in(browser, nakama, "alice", PASSWORD)
    alice.goto(f"{nakama.url}/account")
    alice.fill("input[name=name]", "laptop")
    alice.click("#new-token-button")
    token = alice.locator("#new-token").inner_text().strip()
    assert len(token) >= 32
    expect(alice.locator("#tokens")).to_contain_text("laptop")
    expect(alice.locator("#tokens")).not_to_contain_text(token)
    snap(alice, shots, "09-account-tokens")

    # The create form's import: a git URL, a token field that does not show what is typed.
    alice.goto(f"{nakama.url}/projects")
    alice.click("#import-source summary")
    expect(alice.locator("#source-token")).to_have_attribute("type", "password")
    alice.fill("#project-name", "phone-app")
    alice.fill("#source-url", "https://git.example.org/alice/phone-app.git")
    snap(alice, shots, "10-import")
    alice.fill("#source-url", "")
    alice.click("#create-button")
    expect(alice).to_have_url(f"{nakama.url}/projects/phone-app")
    expect(alice.locator(pipeline_row(alice, 1))).to_have_attribute("data-status", "success")

    # The same page on a phone: nothing wider than the screen.
    state = alice.context.storage_state()
    phone = browser.new_context(viewport={"width": 375, "height": 800}, storage_state=state)
    page = phone.new_page()
    page.goto(f"{nakama.url}/projects/phone-app")
    expect(page.locator(pipeline_row(page, 1))).to_have_attribute("data-status", "success")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    snap(page, shots, "12-project-phone")
    phone.close()
    alice.context.close()

    # The admin's users page: alice and bob, bob's tokens one click away; bob sees no such page.
    admin = sign_in(browser, nakama, "admin", ADMIN_TOKEN)
    admin.goto(f"{nakama.url}/users")
    for name in ("alice", "bob"):
        expect(admin.locator(f"tr[data-user={name}]")).to_be_visible()
    expect(admin.locator("tr[data-user=alice]")).to_contain_text("1")  # her one project
    snap(admin, shots, "11-users")
    admin.context.close()
    bob = sign_in(browser, nakama, "bob", PASSWORD)
    assert bob.goto(f"{nakama.url}/users").status == 404  # type: ignore[union-attr]
    expect(bob.locator("nav")).not_to_contain_text("Users")
    bob.context.close()
