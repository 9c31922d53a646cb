"""An app's ``$DATA_DIR`` against a real ``nakama up``: what the app writes there survives a
deploy, a rollback, a restart of the app and a restart of Nakama; another user's app cannot
see it; it goes with the project; and its size is in the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    app_request,
    clone,
    git,
    git_push,
    running,
    set_version,
    wait_for,
    write_tiny_kit,
)
from tests.e2e.test_variables import user

# Each start appends a line "VERSION pid" to $DATA_DIR/starts; GET / answers VERSION and the
# whole file; GET /other?path=... tries to read another path.
DATA_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "v1"
data = Path(os.environ["DATA_DIR"])
with open(data / "starts", "a") as f:
    f.write(f"{VERSION} {os.getpid()}\\n")
(Path(os.environ["HOME"]) / "note").write_text("home is inside DATA_DIR")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/other?path="):
            try:
                body = open(self.path.split("=", 1)[1]).read()
            except OSError as exc:
                body = f"denied: {type(exc).__name__}"
        else:
            body = VERSION + "\\n" + (data / "starts").read_text()
        raw = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

NAME = "keeper"


@pytest.fixture
def nakama(tmp_path: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit", app=DATA_APP)
    with running(tmp_path / "data", starter_kit=kit, uv_cache=uv_cache) as server:
        yield server


def page(server: NakamaProcess, name: str = NAME) -> str:
    url = str(server.project(name)["app_url"])

    def answer() -> str | None:
        try:
            r = app_request(url, timeout=5)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    return str(wait_for(answer, timeout=60, interval=0.1, what=f"{name} to answer"))


def starts(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()[1:]]


def test_data_dir_survives_deploys_rollbacks_and_restarts_and_goes_with_the_project(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    assert nakama.api.post("/api/v1/projects", json={"name": NAME}).status_code == 201
    first = nakama.pipelines(NAME)[0]
    nakama.wait_deployed(NAME, first["commit"])
    assert starts(page(nakama)) == ["v1"]

    work = clone(nakama, NAME, tmp_path / "work")
    set_version(work, "v2")
    git("commit", "-qam", "v2", cwd=work)
    git_push(work)
    nakama.wait_deployed(NAME, git("rev-parse", "HEAD", cwd=work))
    assert page(nakama).startswith("v2")
    assert starts(page(nakama)) == ["v1", "v2"]  # the deploy kept what v1 wrote

    r = nakama.api.post(f"/api/v1/projects/{NAME}/rollback", json={"pipeline_id": first["id"]})
    assert r.status_code == 202, r.text
    wait_for(lambda: page(nakama).startswith("v1"), timeout=60, what="the rollback")
    assert starts(page(nakama)) == ["v1", "v2", "v1"]

    nakama.stop()
    nakama.start()
    wait_for(lambda: len(starts(page(nakama))) == 4, timeout=60, what="a start after restart")
    assert starts(page(nakama)) == ["v1", "v2", "v1", "v1"]

    usage = nakama.api.get(f"/api/v1/projects/{NAME}/limits").json()
    assert usage["data_bytes"] is not None and usage["data_bytes"] > 0
    data = nakama.data_dir / "apps" / NAME / "data"
    assert (data / "home" / "note").read_text() == "home is inside DATA_DIR"

    # Another user's app does not see it, by path or by name.
    _, bob = user(nakama, "bob")
    with bob:
        assert bob.post("/api/v1/projects", json={"name": "bobs"}).status_code == 201
        nakama.wait_deployed("bobs", nakama.pipelines("bobs")[0]["commit"])
        url = str(nakama.project("bobs")["app_url"]).rstrip("/")
        r = app_request(f"{url}/other?path={data.resolve() / 'starts'}", timeout=5)
        assert r.text.startswith("denied"), r.text

    r = nakama.api.delete(f"/api/v1/projects/{NAME}")
    assert r.status_code == 202, r.text
    # the delete runs in the background: the app's files go first, then the project's row
    wait_for(
        lambda: nakama.api.get(f"/api/v1/projects/{NAME}").status_code == 404,
        timeout=60,
        what="the project to be deleted",
    )
    assert not data.exists()
