"""Local mode under stress: restarts of `nakama up` (graceful and killed in the middle of a
build), overlapping pushes, and a push whose app does not start."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    clone,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
    wait_for,
)
from tests.support import serve_directory, write_sdist

SLOW_SETUP = """\
import time
from setuptools import setup

time.sleep(6)  # a slow build, so the test can interrupt it
setup(name="slowpkg", version="1.0", py_modules=["slowpkg"])
"""


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    with running(tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache) as server:
        yield server


def create(nakama: NakamaProcess, name: str) -> str:
    assert nakama.api.post("/api/v1/projects", json={"name": name}).status_code == 201
    first = nakama.pipelines(name)[0]["commit"]
    return str(nakama.wait_deployed(name, first)["app_url"])


def commit_version(work: Path, version: str) -> str:
    set_version(work, version)
    git("commit", "-qam", version, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def test_graceful_restart_brings_apps_back(nakama: NakamaProcess) -> None:
    url = create(nakama, "keeper")
    assert fetch_text(url) == "v1"
    nakama.stop()
    assert fetch_text(url) is None, "apps stop with nakama"
    nakama.start()
    wait_for(lambda: fetch_text(url) == "v1", timeout=60, what="the app to come back")
    assert nakama.project("keeper")["status"] == "running"


@pytest.fixture
def slow_sdist(tmp_path: Path) -> Iterator[str]:
    """A package that has to be built (no wheel), served as an sdist on loopback: builds see
    only the dependency files, as container builds do, so it cannot come from a path in the
    repository."""
    files = {"setup.py": SLOW_SETUP, "slowpkg.py": "VALUE = 1\n"}
    sdist = write_sdist(tmp_path / "served", "slowpkg", "1.0", files)
    with serve_directory(sdist.parent) as base:
        yield f"{base}/{sdist.name}"


def test_killed_in_the_middle_of_a_build_still_deploys_the_push(
    nakama: NakamaProcess, slow_sdist: str, tmp_path: Path
) -> None:
    url = create(nakama, "crashy")
    work = clone(nakama, "crashy", tmp_path / "work")
    (work / "requirements.txt").write_text(f"slowpkg @ {slow_sdist}\n")
    sha = commit_version(work, "v2")
    git_push(work)
    wait_for(
        lambda: any(
            p["status"] == "running" and p["kind"] == "build" for p in nakama.pipelines("crashy")
        ),
        timeout=60,
        what="the build to start",
    )
    pid = (nakama.data_dir / "apps" / "crashy" / "app.pid").read_text().strip()
    nakama.stop(signal.SIGKILL)
    # Apps are reached through Nakama's gateway, so none answers while it is down, and their
    # sandboxes end with Nakama (nothing runs unsupervised); the next start brings them back.
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the app to end with nakama"
    )
    assert fetch_text(url) is None
    nakama.start()
    nakama.wait_deployed("crashy", sha, timeout=180)
    wait_for(lambda: fetch_text(url) == "v2", timeout=30, what="v2 after the restart")
    envs = [p for p in (nakama.data_dir / "envs").rglob(".tmp-*")]
    assert envs == [], "interrupted builds are cleaned up"


def test_overlapping_pushes_end_on_the_newest_commit(nakama: NakamaProcess, tmp_path: Path) -> None:
    url = create(nakama, "busy")
    work = clone(nakama, "busy", tmp_path / "work")
    (work / "requirements.txt").write_text("six==1.16.0\n")
    commit_version(work, "v2")
    git_push(work)  # a build ...
    for i in range(3, 7):  # ... and code pushes right behind it
        newest = commit_version(work, f"v{i}")
        git_push(work)
    nakama.wait_deployed("busy", newest, timeout=120)
    assert fetch_text(url) == "v6 six=1.16.0"
    statuses = {p["commit"]: p["status"] for p in nakama.pipelines("busy")}
    assert statuses[newest] == "success"
    assert set(statuses.values()) <= {"success", "superseded"}


def test_a_push_that_does_not_start_leaves_the_previous_version_serving(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    url = create(nakama, "fragile")
    work = clone(nakama, "fragile", tmp_path / "work")
    (work / "app.py").write_text("raise SystemExit('boom: broken app')\n")
    git("commit", "-qam", "break it", cwd=work)
    broken = git("rev-parse", "HEAD", cwd=work)
    git_push(work)
    failed = nakama.wait_failed("fragile", broken, timeout=60)
    assert "boom: broken app" in failed["error"]
    assert fetch_text(url) == "v1"
    project = nakama.project("fragile")
    assert project["deployed_commit"] != broken and project["status"] == "running"


def test_a_delete_interrupted_by_a_crash_is_finished_at_the_next_start(
    nakama: NakamaProcess,
) -> None:
    import sqlite3

    url = create(nakama, "halfgone")
    nakama.stop(signal.SIGKILL)
    nakama.kill_apps()
    # The crash came right after the delete was accepted: the record says "deleting" and
    # nothing else has been removed yet.
    with sqlite3.connect(nakama.data_dir / "nakama.db") as db:
        db.execute("UPDATE projects SET status = 'deleting' WHERE name = 'halfgone'")
    assert (nakama.data_dir / "git" / "halfgone.git").exists()
    nakama.start()
    wait_for(
        lambda: nakama.api.get("/api/v1/projects/halfgone").status_code == 404,
        timeout=60,
        what="the delete to be finished",
    )
    assert not (nakama.data_dir / "git" / "halfgone.git").exists()
    assert not (nakama.data_dir / "apps" / "halfgone").exists()
    assert fetch_text(url) is None


def test_a_restart_brings_several_apps_back_at_once_each_on_its_own_code(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    """The restore starts apps in parallel (jobs.restore_workers, issue 13): each app comes
    back on its own commit and its own address, none on another's code or port."""
    names = [f"keeper{i}" for i in range(4)]
    urls = {name: create(nakama, name) for name in names}
    for name in names:
        work = clone(nakama, name, tmp_path / name)
        sha = commit_version(work, f"v-{name}")
        git_push(work)
        nakama.wait_deployed(name, sha)
    assert {name: fetch_text(url) for name, url in urls.items()} == {n: f"v-{n}" for n in names}
    nakama.stop()
    nakama.start()
    wait_for(
        lambda: all(fetch_text(url) == f"v-{name}" for name, url in urls.items()),
        timeout=60,
        what="every app to come back on its own code",
    )
