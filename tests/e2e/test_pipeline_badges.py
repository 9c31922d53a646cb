"""A project's pipelines in the web UI, in Debian's Chromium driven by Playwright, against a
real ``nakama up``: a pipeline that is still running does not wear a success's badge, and the
project page fits a phone's width (375 px: no sideways scrolling) with several pipelines.

The running pipeline is a real one: a push whose app waits, before it listens, for a file the
test makes in its ``$DATA_DIR``, so the pipeline stays running (its health check waiting) for
as long as the test looks at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import chromium
from tests.e2e.nakama_server import (
    TINY_APP,
    NakamaProcess,
    clone,
    git,
    git_push,
    running,
    set_version,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)

PROJECT = "badges"
PASSWORD = "alice-password-1"
GATE = "go"
# The tiny app, once the test has made $DATA_DIR/go: until then its new version is starting.
GATED_APP = (
    "import os as _os, time as _time\n"
    f"while not _os.path.exists(_os.path.join(_os.environ['DATA_DIR'], {GATE!r})):\n"
    "    _time.sleep(0.05)\n" + TINY_APP.replace('VERSION = "v1"', 'VERSION = "gated"')
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    # The gated version may wait longer than the default minute for its health check.
    env = {"NAKAMA_RUNTIME__HEALTH_TIMEOUT_S": "600"}
    with running(tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache, extra_env=env) as s:
        yield s


def pipeline_of(nakama: NakamaProcess, commit: str) -> dict[str, Any] | None:
    return next((p for p in nakama.pipelines(PROJECT) if p["commit"] == commit), None)


def signed_in(browser: Browser, nakama: NakamaProcess, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{nakama.url}/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button.primary")
    expect(page).to_have_url(f"{nakama.url}/projects")
    return page


def badge(page: Page, pipeline_id: int) -> dict[str, str]:
    cell = page.locator(f"#pipelines tr[data-pipeline='{pipeline_id}'] .badge")
    return {
        "class": cell.get_attribute("class") or "",
        "text": cell.inner_text().strip(),
        "background": cell.evaluate("e => getComputedStyle(e).backgroundColor"),
    }


def test_running_is_not_success_and_the_page_fits_a_phone(
    nakama: NakamaProcess, browser: Browser, tmp_path: Path
) -> None:
    tokens = {}
    for username in ("alice", "bob"):
        r = nakama.api.post("/api/v1/users", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        tokens[username] = {"Authorization": f"Bearer {r.json()['token']}"}
    r = httpx.post(
        f"{nakama.url}/api/v1/projects", json={"name": PROJECT}, headers=tokens["alice"], timeout=30
    )
    assert r.status_code == 201, r.text
    nakama.wait_deployed(PROJECT, nakama.pipelines(PROJECT)[0]["commit"])

    work = clone(nakama, PROJECT, tmp_path / "work")
    for version in ("v2", "v3", "v4"):  # several pipelines, as a project soon has
        set_version(work, version)
        git("commit", "-qam", f"{version}: a longer message than fits a phone's column", cwd=work)
        git_push(work)
        nakama.wait_deployed(PROJECT, git("rev-parse", "HEAD", cwd=work))
    (work / "app.py").write_text(GATED_APP)
    git("commit", "-qam", "gated: starts once told to", cwd=work)
    git_push(work)
    gated = git("rev-parse", "HEAD", cwd=work)
    started = wait_for(
        lambda: (p := pipeline_of(nakama, gated)) is not None and p["status"] == "running" and p,
        timeout=120,
        what="the gated pipeline to run",
    )
    done = next(p for p in nakama.pipelines(PROJECT) if p["status"] == "success")

    page = signed_in(browser, nakama, viewport={"width": 1280, "height": 900})
    page.goto(f"{nakama.url}/projects/{PROJECT}")
    now, success = badge(page, started["id"]), badge(page, done["id"])
    assert success["text"] == "success"
    assert now["text"] == "running"
    assert now["class"] != success["class"] and "active" in now["class"].split()
    assert now["background"] != success["background"]
    page.goto(f"{nakama.url}/projects/{PROJECT}/pipelines/{started['id']}")
    on_its_page = page.locator("#pipeline-status .badge")
    assert "active" in (on_its_page.get_attribute("class") or "").split()
    page.context.close()

    phone = signed_in(
        browser,
        nakama,
        viewport={"width": 375, "height": 800},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    for path in (
        f"/projects/{PROJECT}",
        "/projects",
        f"/projects/{PROJECT}/pipelines/{done['id']}",
    ):
        phone.goto(f"{nakama.url}{path}")
        widths = phone.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 375, (path, widths)
    phone.goto(f"{nakama.url}/projects/{PROJECT}")
    rows = phone.locator("#pipelines tbody tr")
    assert rows.count() == len(nakama.pipelines(PROJECT)) >= 5
    expect(phone.locator(f"#pipelines tr[data-pipeline='{started['id']}'] .badge")).to_be_visible()
    expect(
        phone.locator(f"#pipelines tr[data-pipeline='{started['id']}'] .badge")
    ).to_be_in_viewport()

    # Once the app answers, the pipeline succeeds and wears success's badge.
    (nakama.data_dir / "apps" / PROJECT / "data" / GATE).touch()
    nakama.wait_deployed(PROJECT, gated)
    phone.reload()
    assert badge(phone, started["id"])["class"] == badge(phone, done["id"])["class"]
    assert badge(phone, started["id"])["text"] == "success"
    phone.context.close()

    # Bob, no member, sees neither the project nor its pipelines.
    for path in (f"/api/v1/projects/{PROJECT}/pipelines", f"/api/v1/projects/{PROJECT}"):
        r = httpx.get(f"{nakama.url}{path}", headers=tokens["bob"], timeout=30)
        assert r.status_code == 404, (path, r.text)
