"""The five steps of local mode, through the installed `nakama` command, real git over HTTP and
real app processes: create, push code, push dependencies (and a failing build), delete."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    clone,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
    wait_for,
)


@pytest.fixture
def nakama(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path, database_url: str
) -> Iterator[NakamaProcess]:
    with running(
        tmp_path / "data",
        starter_kit=tiny_kit,
        uv_cache=uv_cache,
        extra_env={"NAKAMA_DATABASE_URL": database_url},
    ) as server:
        yield server


def test_create_push_code_push_dependencies_delete(nakama: NakamaProcess, tmp_path: Path) -> None:
    # 2. create
    r = nakama.api.post("/api/v1/projects", json={"name": "sales-dashboard"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["clone_url"].endswith("/git/sales-dashboard.git")
    assert created["status"] == "building"
    assert nakama.api.post("/api/v1/projects", json={"name": "sales-dashboard"}).status_code == 409
    first = nakama.pipelines("sales-dashboard")
    assert [p["kind"] for p in first] == ["build"]
    project = nakama.wait_deployed("sales-dashboard", first[0]["commit"])
    app_url = project["app_url"]
    assert fetch_text(app_url) == "v1"
    assert project["image_tag"].startswith("main-" + first[0]["commit"][:8] + "-")

    # 3. clone over HTTP, push a code change: live without a rebuild
    work = clone(nakama, "sales-dashboard", tmp_path / "work")
    set_version(work, "v2")
    git("commit", "-qam", "v2", cwd=work)
    sha2 = git("rev-parse", "HEAD", cwd=work)
    started = time.monotonic()
    remote_says = git_push(work)
    assert "nakama" in remote_says
    wait_for(lambda: fetch_text(app_url) == "v2", timeout=30, what="v2 to be served")
    elapsed = time.monotonic() - started
    project = nakama.wait_deployed("sales-dashboard", sha2)
    reload = nakama.pipelines("sales-dashboard")[0]
    assert reload["kind"] == "reload" and reload["commit"] == sha2
    assert "only code changed" in reload["reason"]
    assert project["last_push"]["action"] == "reload"
    assert project["image_tag"] == created_tag(nakama, first[0]["id"])
    assert elapsed < 15, f"code push took {elapsed:.1f}s to go live"

    # 4. add a package: one build, app restarts on it; old version serves meanwhile
    (work / "requirements.txt").write_text("six==1.16.0\n")
    set_version(work, "v3")
    git("commit", "-qam", "add six", cwd=work)
    sha3 = git("rev-parse", "HEAD", cwd=work)
    git_push(work)
    during = fetch_text(app_url)
    assert during in ("v2", "v3 six=1.16.0")
    nakama.wait_deployed("sales-dashboard", sha3)
    assert fetch_text(app_url) == "v3 six=1.16.0"
    build = nakama.pipelines("sales-dashboard")[0]
    assert build["kind"] == "build" and build["status"] == "success"
    assert "requirements.txt" in build["reason"]
    log = nakama.api.get(f"/api/v1/projects/sales-dashboard/pipelines/{build['id']}/log").text
    assert "building environment" in log and "six" in log

    # ... a failing build keeps the old version serving and shows why
    (work / "requirements.txt").write_text("six==1.16.0\nnakama-no-such-package-xyz==0.0.1\n")
    set_version(work, "v4")
    git("commit", "-qam", "broken dependency", cwd=work)
    sha4 = git("rev-parse", "HEAD", cwd=work)
    git_push(work)
    failed = nakama.wait_failed("sales-dashboard", sha4, timeout=120)
    assert "nakama-no-such-package-xyz" in failed["error"]
    failed_log = nakama.api.get(
        f"/api/v1/projects/sales-dashboard/pipelines/{failed['id']}/log"
    ).text
    assert "nakama-no-such-package-xyz" in failed_log
    assert fetch_text(app_url) == "v3 six=1.16.0"
    project = nakama.project("sales-dashboard")
    assert project["deployed_commit"] == sha3 and project["status"] == "running"
    assert "failed" in project["status_message"]
    assert "tiny app starting" in nakama.api.get("/api/v1/projects/sales-dashboard/logs").text

    # 5. delete: repository, process, environments and records are gone
    assert nakama.api.delete("/api/v1/projects/sales-dashboard").status_code == 202
    wait_for(
        lambda: nakama.api.get("/api/v1/projects/sales-dashboard").status_code == 404,
        timeout=60,
        what="the project to be deleted",
    )
    assert nakama.api.delete("/api/v1/projects/sales-dashboard").status_code == 202
    assert fetch_text(app_url) is None
    data = nakama.data_dir
    assert not (data / "git" / "sales-dashboard.git").exists()
    assert not (data / "apps" / "sales-dashboard").exists()
    assert [p.name for p in (data / "envs").iterdir() if not p.name.startswith(".")] == []
    assert nakama.api.get("/api/v1/projects").json() == []


def created_tag(nakama: NakamaProcess, pipeline_id: int) -> str:
    r = nakama.api.get(f"/api/v1/projects/sales-dashboard/pipelines/{pipeline_id}")
    return str(r.json()["tag"])


def test_api_needs_a_token_and_validates_names(nakama: NakamaProcess) -> None:
    anonymous = httpx.get(f"{nakama.url}/api/v1/projects")
    assert anonymous.status_code == 401
    wrong = httpx.get(f"{nakama.url}/api/v1/projects", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for bad, words in [("Sales", "upper-case"), ("a" * 41, "41 characters"), ("x_y", "'_'")]:
        r = nakama.api.post("/api/v1/projects", json={"name": bad})
        assert r.status_code == 422
        assert words in r.text
    assert nakama.api.get("/api/v1/projects/nope").status_code == 404
    # a maintainer is a GitLab user: cluster mode only, refused before anything is made
    r = nakama.api.post("/api/v1/projects", json={"name": "mine", "maintainer": "jsmith"})
    assert r.status_code == 422 and "local mode names no maintainer" in r.text
    assert nakama.api.get("/api/v1/projects/mine").status_code == 404
    assert nakama.api.get("/docs").status_code == 200
    assert ADMIN_TOKEN not in nakama.log()
