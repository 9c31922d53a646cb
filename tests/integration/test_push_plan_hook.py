"""The real post-receive hook (run by real git on a real push into a LocalForge repository):
the plan line and the app's address when Nakama handed it a context, nothing more when it did
not (or handed a broken one), and never a failed push when the receiver is away or busy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.local.forge import LocalForge
from backend.local.post_receive import CONTEXT_ENV, PushContext
from nakama.settings import DEFAULT_DEPENDENCY_FILES
from tests.support import free_port, serve

KIT = {"app.py": b"print('v1')\n", "requirements.txt": b"six\n"}


@pytest.fixture
def receiver() -> Iterator[str]:
    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    app = Starlette(routes=[Route("/{kind}/{project}", hook, methods=["POST"])])
    with serve(app) as url:
        yield url


def make_repo(tmp_path: Path, base_url: str, name: str) -> tuple[LocalForge, Path]:
    forge = LocalForge(repos_dir=tmp_path / "repos", base_url=base_url)
    forge.create_repository(name, files=KIT, branch="main", hook_token="t" * 32)
    work = tmp_path / f"work-{name}"
    subprocess.run(["git", "clone", "-q", str(forge.repo_path(name)), str(work)], check=True)
    return forge, work


def push(work: Path, files: dict[str, str], env: dict[str, str]) -> str:
    for path, text in files.items():
        (work / path).write_text(text)
    git = ["git", "-c", "user.name=a", "-c", "user.email=a@b"]
    subprocess.run([*git, "commit", "-qam", "change"], cwd=work, check=True)
    done = subprocess.run(
        ["git", "push", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def context(tmp_path: Path, name: str) -> dict[str, str]:
    return PushContext(
        app_url=f"http://{name}.localhost:8000/",
        envs_dir=str(tmp_path / "envs"),
        dependency_files=DEFAULT_DEPENDENCY_FILES,
        max_file_bytes=1024 * 1024,
        reload_strategy="live",
    ).to_env()


def test_the_hook_says_the_plan_and_the_app_of_the_pushed_project(
    tmp_path: Path, receiver: str
) -> None:
    _, alice = make_repo(tmp_path, receiver, "alice-app")
    _, bob = make_repo(tmp_path, receiver, "bob-app")
    said = push(alice, {"requirements.txt": "six==1.17.0\n"}, context(tmp_path, "alice-app"))
    assert "remote: nakama: requirements.txt changed: building a new environment;" in said
    assert "remote: nakama: app: http://alice-app.localhost:8000/" in said
    # No environment exists for these dependencies (none was built here): a build, it says.
    said = push(bob, {"app.py": "print('v2')\n"}, context(tmp_path, "bob-app"))
    assert "remote: nakama: no build exists yet for this commit's dependencies" in said
    assert "remote: nakama: app: http://bob-app.localhost:8000/" in said
    assert "alice-app" not in said


@pytest.mark.parametrize("given", [None, "{not json", '{"app_url": "x"}'])
def test_without_a_usable_context_the_push_is_delivered_and_says_no_plan(
    given: str | None, tmp_path: Path, receiver: str
) -> None:
    _, work = make_repo(tmp_path, receiver, "demo")
    said = push(work, {"app.py": "print('v2')\n"}, {} if given is None else {CONTEXT_ENV: given})
    assert "remote: nakama: push to main received" in said
    assert "building" not in said and "app:" not in said


def test_a_receiver_that_is_away_fails_no_push(tmp_path: Path) -> None:
    _, work = make_repo(tmp_path, f"http://127.0.0.1:{free_port()}", "demo")
    said = push(work, {"requirements.txt": "six==1.17.0\n"}, context(tmp_path, "demo"))
    assert "was NOT delivered" in said
    assert "building a new environment" not in said  # nothing was planned: nothing is told
