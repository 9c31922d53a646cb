"""The local forge against real git: repositories, heads, compares and file reads."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from backend.local.forge import LocalForge
from nakama.errors import Conflict, InvalidInput, NotFound
from nakama.planning import ZERO_SHA
from nakama.settings import DEFAULT_DEPENDENCY_FILES

HOOK_TOKEN = "hook-" + "s" * 16
FILES = {
    "streamlit_app.py": b"import streamlit as st\nst.write('hi')\n",
    "requirements.txt": b"streamlit==1.35.0\n",
    "pages/1_About.py": b"print('about')\n",
    "scripts/run.sh": b"#!/bin/sh\necho run\n",
}


@pytest.fixture
def forge(tmp_path: Path) -> LocalForge:
    return LocalForge(repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:1/")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_change(
    forge: LocalForge, project: str, tmp_path: Path, changes: dict[str, str | None], *, message: str
) -> str:
    """Clone over the file system, apply ``changes`` (None deletes), commit and push."""
    work = tmp_path / f"work-{project}"
    if not work.exists():
        git("clone", "-q", str(forge.repo_path(project)), str(work), cwd=tmp_path)
    for path, content in changes.items():
        target = work / path
        if content is None:
            git("rm", "-q", path, cwd=work)
        elif content.startswith("mv:"):
            git("mv", content[3:], path, cwd=work)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    # The hook points at a closed port here; it reports that and exits 0.
    git("push", "-q", "origin", "HEAD", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def test_create_and_read(forge: LocalForge) -> None:
    sha = forge.create_repository(
        "demo", files=FILES, branch="main", hook_token=HOOK_TOKEN, executable={"scripts/run.sh"}
    )
    assert forge.exists("demo")
    assert forge.head("demo", "main") == sha
    assert forge.head("demo", "nope") is None
    assert forge.clone_url("demo") == "http://127.0.0.1:1/git/demo.git"
    repo = forge.repo_path("demo")
    assert repo == forge.repos_dir / "demo.git"
    tree = subprocess.run(
        ["git", f"--git-dir={repo}", "ls-tree", "-r", sha],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "100755 blob" in next(line for line in tree.splitlines() if "scripts/run.sh" in line)
    assert forge.read_files("demo", sha, DEFAULT_DEPENDENCY_FILES) == {
        "requirements.txt": FILES["requirements.txt"]
    }
    assert forge.read_files("demo", sha, ["*.py"]) == {
        "streamlit_app.py": FILES["streamlit_app.py"],
        "pages/1_About.py": FILES["pages/1_About.py"],
    }
    assert forge.read_files("demo", sha, ["nothing*"]) == {}
    with pytest.raises(NotFound):
        forge.read_files("demo", "0123456789abcdef0123456789abcdef01234567", ["*"])


def test_repository_layout(forge: LocalForge) -> None:
    forge.create_repository("demo", files=FILES, branch="trunk", hook_token=HOOK_TOKEN)
    repo = forge.repo_path("demo")
    token = repo / "nakama" / "hook-token"
    assert token.read_text() == HOOK_TOKEN
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    hook = repo / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    assert hook.read_text().startswith("#!/bin/sh\n")
    config = json.loads((repo / "nakama" / "hook.json").read_text())
    assert config["project"] == "demo"
    assert config["instance"] == "http://127.0.0.1:1"
    assert config["urls"] == [
        "http://127.0.0.1:1/build-image/demo",
        "http://127.0.0.1:1/code-reload/demo",
    ]
    assert config["default_branch"] == "trunk"
    assert HOOK_TOKEN not in json.dumps(config)
    for key, value in (("http.receivepack", "true"), ("uploadpack.allowanysha1inwant", "true")):
        assert git("config", "--get", key, cwd=repo) == value
    assert git("symbolic-ref", "HEAD", cwd=repo) == "refs/heads/trunk"
    assert [p.name for p in forge.repos_dir.iterdir()] == ["demo.git"]  # no temp dirs left


def test_changed_paths(forge: LocalForge, tmp_path: Path) -> None:
    first = forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    second = commit_change(
        forge,
        "demo",
        tmp_path,
        {"app.py": "x", "pages/2_Renamed.py": "mv:pages/1_About.py", "requirements.txt": None},
        message="rename and delete",
    )
    assert forge.head("demo", "main") == second
    assert forge.changed_paths("demo", first, second) == [
        "app.py",
        "pages/1_About.py",
        "pages/2_Renamed.py",
        "requirements.txt",
    ]
    assert forge.changed_paths("demo", second, second) == []
    assert forge.changed_paths("demo", ZERO_SHA, second) is None
    missing = "0123456789abcdef0123456789abcdef01234567"
    assert forge.changed_paths("demo", missing, second) is None
    with pytest.raises(InvalidInput):
        forge.changed_paths("demo", "--output=/tmp/x", second)


def test_delete_is_idempotent_and_names_are_checked(forge: LocalForge) -> None:
    forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    with pytest.raises(Conflict):
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    forge.delete_repository("demo")
    assert not forge.exists("demo")
    assert not forge.repo_path("demo").exists()
    forge.delete_repository("demo")
    forge.delete_repository("never-existed")
    assert list(forge.repos_dir.iterdir()) == []
    with pytest.raises(NotFound):
        forge.head("demo", "main")
    assert not forge.exists("../etc")
    with pytest.raises(InvalidInput):
        forge.repo_path("../etc")
    with pytest.raises(InvalidInput):
        forge.create_repository("x", files={"../evil": b""}, branch="main", hook_token=HOOK_TOKEN)
    assert not forge.exists("x")
    assert list(forge.repos_dir.iterdir()) == []  # a failed creation leaves nothing behind
