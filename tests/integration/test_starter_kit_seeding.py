"""The real app_starter_kit/ is what a new project's repository holds, its hidden files too
(.streamlit/config.toml with the viewer toolbar, .gitignore), in local mode (a bare repository
on disk, cloned with git) and in cluster mode (the GitLab fake, through python-gitlab)."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from backend.cluster.gitlab_forge import GitLabForge
from backend.local.forge import LocalForge
from backend.projects import read_starter_kit
from nakama.clients.gitlab import GitLabClient
from nakama.settings import GitLabSettings, Settings

if TYPE_CHECKING:
    from tests.fakes.gitlab import GitLabFake

pytest_plugins = ["tests.fakes.gitlab"]

KIT = Settings().starter_kit_dir
HOOK_TOKEN = "hook-secret-" + "k" * 20


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def check_kit_checkout(work: Path) -> None:
    config = tomllib.loads((work / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"
    assert config["server"]["runOnSave"] is True
    assert ".streamlit/secrets.toml" in (work / ".gitignore").read_text()
    tracked = set(git("ls-files", cwd=work).split())
    assert tracked == set(read_starter_kit(KIT)), tracked


def test_the_kit_read_for_new_projects_has_its_hidden_files() -> None:
    files = read_starter_kit(KIT)
    assert {".streamlit/config.toml", ".gitignore", "app.py", "README.md"} <= set(files)
    assert b'toolbarMode = "viewer"' in files[".streamlit/config.toml"]


def test_a_local_project_starts_with_the_whole_kit(tmp_path: Path) -> None:
    forge = LocalForge(repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:9")
    for name in ("alice-app", "bob-app"):
        forge.create_repository(
            name, files=read_starter_kit(KIT), branch="main", hook_token=HOOK_TOKEN
        )
    for name in ("alice-app", "bob-app"):
        work = tmp_path / f"work-{name}"
        git("clone", "-q", str(forge.repo_path(name)), str(work), cwd=tmp_path)
        check_kit_checkout(work)


@pytest.fixture
def gitlab_forge(gitlab_fake: GitLabFake) -> Iterator[GitLabForge]:
    settings = GitLabSettings(
        url=gitlab_fake.url, token=SecretStr(gitlab_fake.token), group=gitlab_fake.group
    )
    client = GitLabClient(settings, sleep=lambda _s: None)
    yield GitLabForge(client, hook_base_url="http://127.0.0.1:9/nakama")
    client.close()


def test_a_cluster_project_starts_with_the_whole_kit(
    gitlab_fake: GitLabFake, gitlab_forge: GitLabForge, tmp_path: Path
) -> None:
    for name in ("alice-app", "bob-app"):
        gitlab_forge.create_repository(
            name, files=read_starter_kit(KIT), branch="main", hook_token=HOOK_TOKEN
        )
    for name in ("alice-app", "bob-app"):
        work = tmp_path / f"work-{name}"
        git("clone", "-q", gitlab_fake.git_url(name), str(work), cwd=tmp_path)
        check_kit_checkout(work)
