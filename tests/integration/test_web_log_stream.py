"""A pipeline's log streams to the web page while the pipeline runs (server-sent events), against
a real ``nakama up``: the pipeline is made slow by an app that takes seconds to answer, so its log
grows in steps; the stream delivers each step as it comes, then the end with the status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nakama_server import NakamaProcess, clone, git, git_push, wait_for, write_tiny_kit
from tests.integration.test_web_security import Browser
from tests.support import sse_events

SLOW_START_S = 3


@pytest.fixture
def nakama(tmp_path: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    server = NakamaProcess(data_dir=tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv")
    server.start()
    yield server
    server.close()


def stream(browser: Browser, path: str, **headers: str) -> list[tuple[dict[str, str], float]]:
    with browser.http.stream("GET", path, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


def text_of(events: list[tuple[dict[str, str], float]]) -> str:
    return "".join(
        json.loads(e["data"])["text"] for e, _ in events if e.get("event") in ("log", "reset")
    )


def test_the_log_of_a_running_pipeline_streams_in_steps(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    r = nakama.api.post("/api/v1/projects", json={"name": "streamed"})
    assert r.status_code == 201, r.text
    first = nakama.wait_deployed("streamed", nakama.pipelines("streamed")[0]["commit"])
    assert first["status"] == "running"

    # A code push whose app takes seconds to come up: its pipeline waits for it, log half done.
    work = clone(nakama, "streamed", tmp_path / "work")
    app = work / "app.py"
    app.write_text(f"import time\ntime.sleep({SLOW_START_S})\n" + app.read_text())
    git("commit", "-qam", "slow start", cwd=work)
    git_push(work)
    commit = git("rev-parse", "HEAD", cwd=work)

    def running() -> dict[str, Any] | None:
        return next((p for p in nakama.pipelines("streamed") if p["commit"] == commit), None)

    pipeline = wait_for(running, timeout=30, what="the pipeline of the push")
    browser = Browser(nakama)
    try:
        assert browser.sign_in("admin", nakama.env["NAKAMA_ADMIN_TOKEN"]).status_code == 303
        path = f"/projects/streamed/pipelines/{pipeline['id']}/log/events"
        opened = time.monotonic()
        events = stream(browser, path)
        logs = [(e, at) for e, at in events if e.get("event") == "log"]
        end = events[-1][0]
        assert end["event"] == "end"
        assert json.loads(end["data"])["status"] == "success"
        # Several pieces, spread over the seconds the app took to start, not one at the end.
        assert len(logs) >= 2, events
        assert logs[-1][1] - logs[0][1] >= SLOW_START_S / 2, [at - opened for _, at in logs]
        assert "deploying" in text_of(logs[:1]) or "deploying" in text_of(logs[:-1])
        whole = nakama.api.get(f"/api/v1/projects/streamed/pipelines/{pipeline['id']}/log").text
        assert text_of(events) == whole

        # A browser that reconnects says how much it has (Last-Event-ID): it gets only the rest.
        have = int(logs[0][0]["id"])
        resumed = stream(browser, path, **{"Last-Event-ID": str(have)})
        assert text_of(resumed) == whole[have:]
        assert resumed[-1][0]["event"] == "end"
    finally:
        browser.close()
