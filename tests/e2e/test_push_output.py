"""What `git push` says, through a real `nakama up`, the git CLI over HTTP and the real hook: the
plan of the push (a reload or a build, and why) and the app's address, each user's own; and what
local mode says of a packages.txt, in the pipeline log and on the project, instead of ignoring it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    git,
    running,
    set_version,
    wait_for,
    write_tiny_kit,
)
from tests.e2e.test_variables import user

STREAMLIT_TOML = 'run = "python -m streamlit run app.py"\n'


@pytest.fixture
def nakama(tmp_path: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    with running(tmp_path / "data", starter_kit=kit, uv_cache=uv_cache) as server:
        yield server


def clone_as(nakama: NakamaProcess, token: str, name: str, dest: Path) -> Path:
    url = f"{nakama.url}/git/{name}.git".replace("http://", f"http://nakama:{token}@")
    git("clone", "-q", url, str(dest), cwd=dest.parent)
    return dest


def push(work: Path, message: str) -> str:
    """Commit everything and push; what git showed of the remote (its stderr)."""
    git("add", "-A", cwd=work)
    git("commit", "-qm", message, cwd=work)
    out = subprocess.run(
        ["git", "push", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def remote_lines(stderr: str) -> list[str]:
    return [line.removeprefix("remote: ").strip() for line in stderr.splitlines()
            if line.startswith("remote: ")]  # fmt: skip


def test_push_output_tells_the_plan_and_each_users_own_app_url(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    bob_token, bob = user(nakama, "bob")
    with alice, bob:
        for client, name in ((alice, "alice-app"), (bob, "bob-app")):
            assert client.post("/api/v1/projects", json={"name": name}).status_code == 201
            nakama.wait_deployed(name, nakama.pipelines(name)[0]["commit"], timeout=180)
        alice_url = nakama.project("alice-app")["app_url"]
        bob_url = nakama.project("bob-app")["app_url"]
        assert alice_url != bob_url
        work = clone_as(nakama, alice_token, "alice-app", tmp_path / "alice")

        # A code-only push: a reload, and where to see it.
        set_version(work, "v2")
        said = remote_lines(push(work, "v2"))
        assert "nakama: only code changed (1 file): no build; the app restarts on the new code" in (
            said
        ), said
        assert f"nakama: app: {alice_url}" in said
        assert not any(bob_url in line for line in said)

        # A dependency change: a build, and the old version serving meanwhile.
        (work / "requirements.txt").write_text("six==1.17.0\n")
        said = remote_lines(push(work, "six"))
        assert (
            "nakama: requirements.txt changed: building a new environment; the current version "
            "keeps serving until the new one is up"
        ) in said, said
        assert f"nakama: app: {alice_url}" in said
        sha = git("rev-parse", "HEAD", cwd=work)
        nakama.wait_deployed("alice-app", sha, timeout=180)

        # Bob's push to his own project names his app, never Alice's.
        bob_work = clone_as(nakama, bob_token, "bob-app", tmp_path / "bob")
        set_version(bob_work, "bob-v2")
        said = remote_lines(push(bob_work, "bob v2"))
        assert f"nakama: app: {bob_url}" in said, said
        assert not any(alice_url in line for line in said)

        # A Streamlit app whose push changes its main script alone reloads live (the live
        # strategy is the default): the hook says so.
        (work / "nakama.toml").write_text(STREAMLIT_TOML)
        said = remote_lines(push(work, "run it with streamlit"))
        assert any("nakama.toml changed: building a new environment" in s for s in said), said
        sha = git("rev-parse", "HEAD", cwd=work)

        def built() -> bool:  # the build; the app itself cannot start (no Streamlit installed)
            runs = [p for p in nakama.pipelines("alice-app") if p["commit"] == sha]
            return bool(runs) and runs[0]["status"] in ("success", "failed")

        wait_for(built, timeout=180, what="the nakama.toml build")
        (work / "app.py").write_text("import streamlit as st\nst.title('hi')\n")
        said = remote_lines(push(work, "a streamlit script"))
        assert (
            "nakama: only code changed (1 file): live reload, the running app reruns it "
            "(no restart, no build)"
        ) in said, said


def test_local_mode_says_packages_txt_is_not_installed(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    _, bob = user(nakama, "bob")
    with alice, bob:
        for client, name in ((alice, "alice-app"), (bob, "bob-app")):
            assert client.post("/api/v1/projects", json={"name": name}).status_code == 201
        for name in ("alice-app", "bob-app"):
            nakama.wait_deployed(name, nakama.pipelines(name)[0]["commit"], timeout=180)
        work = clone_as(nakama, alice_token, "alice-app", tmp_path / "alice")
        (work / "packages.txt").write_text("libgl1\nffmpeg\n")
        said = remote_lines(push(work, "system packages"))
        assert any(line.startswith("nakama: packages.txt changed: building") for line in said)
        sha = git("rev-parse", "HEAD", cwd=work)
        nakama.wait_deployed("alice-app", sha, timeout=180)
        expected = "packages.txt lists libgl1, ffmpeg: system packages are not installed in local"
        build = nakama.pipelines("alice-app")[0]
        log = alice.get(f"/api/v1/projects/alice-app/pipelines/{build['id']}/log").text
        assert f"note: {expected}" in log
        project = alice.get("/api/v1/projects/alice-app").json()
        assert expected in (project["status_message"] or ""), project
        page = alice.get("/projects/alice-app")
        if page.status_code == 200:  # the web UI answers a token as the API does
            assert expected in page.text
        # A code-only push on the same environment keeps saying it.
        set_version(work, "v2")
        push(work, "v2")
        sha = git("rev-parse", "HEAD", cwd=work)
        nakama.wait_deployed("alice-app", sha, timeout=60)
        assert expected in (alice.get("/api/v1/projects/alice-app").json()["status_message"] or "")
        # Bob's project says nothing of Alice's packages.
        wait_for(lambda: bob.get("/api/v1/projects/bob-app").status_code == 200, timeout=5)
        assert "packages.txt" not in str(bob.get("/api/v1/projects/bob-app").json())
