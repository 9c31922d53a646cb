"""The real starter kit, end to end: `nakama up` creates a project from app_starter_kit/, builds a
real Streamlit environment, serves the app, and a code-only push reloads it without a build.

Streamlit renders through a websocket, so the page's HTML alone says nothing about which code ran:
the app is rendered for real, by Debian's Chromium driven by Playwright (Playwright's own browser
download is not used).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.e2e.browser import chromium
from tests.e2e.nakama_server import (
    NakamaProcess,
    app_request,
    clone,
    git,
    git_push,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KIT_TITLE = "Hello from Nakama"
COLD_BUILD_S = 300  # the first build installs Streamlit, numpy and pandas from the index
RENDER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(params=["restart", "live"])
def nakama(
    request: pytest.FixtureRequest, tmp_path: Path, uv_cache: Path
) -> Iterator[NakamaProcess]:
    server = NakamaProcess(
        data_dir=tmp_path / "data",
        uv_cache=uv_cache,
        extra_env={"NAKAMA_RUNTIME__RELOAD_STRATEGY": request.param},
    )
    server.env.pop("NAKAMA_STARTER_KIT_DIR", None)  # the real app_starter_kit/, whatever is set
    server.start()
    yield server
    server.close()


def rendered_title(browser: Browser, url: str, expected: str) -> str:
    """Open ``url`` in a fresh browser context and return the ``<h1>`` once it reads ``expected``.

    A new context is a new Streamlit session: it runs the script the server has now.
    """
    context = browser.new_context()
    try:
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(url, wait_until="domcontentloaded", timeout=RENDER_TIMEOUT_MS)
        heading = page.locator("h1", has_text=expected)
        try:
            heading.first.wait_for(timeout=RENDER_TIMEOUT_MS)
        except Exception as exc:
            body = page.locator("body").inner_text(timeout=5_000)
            raise AssertionError(
                f"{url} never showed {expected!r}; it shows:\n{body[:1500]}"
            ) from exc
        assert "Traceback" not in page.locator("body").inner_text()
        # Streamlit renders over its WebSocket, opened on the app's own address (the gateway).
        host = url.split("//", 1)[1].split("/", 1)[0]
        assert any(s.startswith(f"ws://{host}/_stcore/stream") for s in sockets), sockets
        return heading.first.inner_text()
    finally:
        context.close()


def healthy(app_url: str) -> bool:
    try:
        r = app_request(f"{app_url}_stcore/health")
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.text == "ok"


def process_cwd(nakama: NakamaProcess, name: str) -> Path:
    pid = int((nakama.data_dir / "apps" / name / "app.pid").read_text())
    return Path(os.readlink(f"/proc/{pid}/cwd"))


def environment_python(nakama: NakamaProcess, tag: str) -> Path:
    """The interpreter of the environment published as ``tag``."""
    for meta in (nakama.data_dir / "envs").glob("**/nakama-build.json"):
        if json.loads(meta.read_text())["tag"] == tag:
            return meta.parent / "bin" / "python"
    raise AssertionError(f"no environment tagged {tag}")


def streamlit_option(python: Path, cwd: Path, option: str) -> str | None:
    """What ``streamlit config show`` run in the app's directory says ``option`` is."""
    out = subprocess.run(
        [str(python), "-m", "streamlit", "config", "show"],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "HOME": str(cwd)},
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith(f"{option} = "):
            return line.split(" = ", 1)[1].strip().strip('"')
    return None


def test_starter_kit_deploys_renders_and_reloads_a_code_push(
    nakama: NakamaProcess, browser: Browser, tmp_path: Path
) -> None:
    r = nakama.api.post("/api/v1/projects", json={"name": "kit-demo"})
    assert r.status_code == 201, r.text
    first = nakama.pipelines("kit-demo")
    assert [p["kind"] for p in first] == ["build"]
    project = nakama.wait_deployed("kit-demo", first[0]["commit"], timeout=COLD_BUILD_S)
    app_url = project["app_url"]
    # Opened by a browser through the gateway at the app's own address, with no sign-in.
    assert app_url.startswith("http://kit-demo.localhost:"), app_url
    r = nakama.api.patch("/api/v1/projects/kit-demo", json={"visibility": "public"})
    assert r.status_code == 200 and r.json()["visibility"] == "public", r.text
    image_tag = project["image_tag"]

    # The app URL serves Streamlit's page, and Streamlit's own health endpoint answers.
    page = app_request(app_url, token=None, timeout=10)
    assert page.status_code == 200
    assert "<title>Streamlit</title>" in page.text
    assert healthy(app_url)
    assert rendered_title(browser, app_url, KIT_TITLE) == KIT_TITLE
    build_log = nakama.api.get(f"/api/v1/projects/kit-demo/pipelines/{first[0]['id']}/log").text
    assert "streamlit" in build_log.lower()

    # The new project's repository holds the kit's hidden files too: Streamlit's settings,
    # which the running app has (visitors get the viewer toolbar: no developer options, no
    # Deploy button).
    work = clone(nakama, "kit-demo", tmp_path / "work")
    config = tomllib.loads((work / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"
    assert (work / ".gitignore").is_file()
    python = environment_python(nakama, image_tag)
    assert streamlit_option(python, process_cwd(nakama, "kit-demo"), "toolbarMode") == "viewer"

    # A code-only push: reload, no build; the new code is what runs and what renders.
    new_title = f"Sales at a glance {time.time_ns() % 10**6}"
    app_py = work / "app.py"
    source = app_py.read_text()
    assert f'st.title("{KIT_TITLE}")' in source
    app_py.write_text(source.replace(f'st.title("{KIT_TITLE}")', f'st.title("{new_title}")'))
    git("commit", "-qam", "retitle the app", cwd=work)
    sha2 = git("rev-parse", "HEAD", cwd=work)
    pid_before = (nakama.data_dir / "apps" / "kit-demo" / "app.pid").read_text()
    git_push(work)

    project = nakama.wait_deployed("kit-demo", sha2, timeout=60)
    reload = nakama.pipelines("kit-demo")[0]
    assert reload["kind"] == "reload" and reload["commit"] == sha2, reload
    assert reload["status"] == "success"
    assert "only code changed" in reload["reason"]
    assert project["image_tag"] == image_tag  # the same environment: nothing was built
    assert [p["kind"] for p in nakama.pipelines("kit-demo")].count("build") == 1
    wait_for(lambda: healthy(app_url), timeout=30, what="the app to be healthy again")

    # The process runs from a checkout of the new commit ...
    cwd = process_cwd(nakama, "kit-demo")
    assert cwd.is_relative_to(nakama.data_dir / "apps" / "kit-demo"), cwd
    assert f'st.title("{new_title}")' in (cwd / "app.py").read_text()
    # ... and a browser gets the new title rendered, not the kit's.
    assert rendered_title(browser, app_url, new_title) == new_title
    assert "Streamlit" in nakama.api.get("/api/v1/projects/kit-demo/logs").text
    # With the live strategy the same process reran the changed script; otherwise it restarted.
    reload_log = nakama.api.get(f"/api/v1/projects/kit-demo/pipelines/{reload['id']}/log").text
    pid_after = (nakama.data_dir / "apps" / "kit-demo" / "app.pid").read_text()
    if nakama.env["NAKAMA_RUNTIME__RELOAD_STRATEGY"] == "live":
        assert "updated in place (live)" in reload_log
        assert pid_after == pid_before
    else:
        assert "app is up: restarted" in reload_log
        assert pid_after != pid_before
