"""code_reloader.live: mirroring a synced commit into a stable directory, and a real Streamlit
process (rendered by Debian's Chromium through Playwright) rerunning it without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from code_reloader.live import (
    LIVE_FLAGS,
    live_command,
    live_commit,
    live_dir,
    live_eligible,
    main_script,
    publish_live,
)
from code_reloader.sync import sync_commit
from tests.support import free_port

STREAMLIT_CMD = ["/env/bin/python", "-m", "streamlit", "run", "app.py", "--server.port", "8501"]


def _git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Repo:
    """A work tree whose commits are synced the way local mode does (sync_commit)."""

    def __init__(self, base: Path) -> None:
        self.work = base / "work"
        self.root = base / "code"
        _git("init", "--quiet", "--initial-branch=main", str(self.work), cwd=base)

    def commit(self, files: dict[str, str | None]) -> str:
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
                if path.parent != self.work and not any(path.parent.iterdir()):
                    path.parent.rmdir()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        _git("add", "-A", cwd=self.work)
        _git("commit", "--quiet", "--allow-empty", "-m", "change", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def deploy(self, sha: str) -> tuple[Path, list[str], list[str]]:
        worktree = sync_commit(repo_url=str(self.work), commit=sha, root=self.root)
        update = publish_live(self.root, worktree, commit=sha)
        return worktree, list(update.written), list(update.removed)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def _tree(top: Path) -> dict[str, str]:
    found = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_text()
    return found


# --- mirroring ------------------------------------------------------------------------------


def test_publish_copies_the_commit_into_a_stable_real_directory(repo: Repo) -> None:
    sha = repo.commit({"app.py": "A = 1\n", "lib/util.py": "U = 1\n", "data/x.csv": "a,b\n"})
    worktree, written, removed = repo.deploy(sha)
    live = live_dir(repo.root)
    assert not live.is_symlink() and live.is_dir()
    assert written == ["app.py", "data/x.csv", "lib/util.py"] and removed == []
    assert _tree(live) == {
        "app.py": "A = 1\n", "data/x.csv": "a,b\n", "lib/util.py": "U = 1\n"
    }  # fmt: skip
    assert not (live / ".git").exists()  # the worktree's .git file stays behind
    assert live_commit(repo.root) == sha
    assert (worktree / "app.py").read_text() == "A = 1\n"


def test_only_changed_files_are_rewritten_and_deleted_files_go(repo: Repo) -> None:
    repo.deploy(repo.commit({"app.py": "A = 1\n", "keep.py": "K\n", "old/gone.py": "G\n"}))
    live = live_dir(repo.root)
    kept_inode = (live / "keep.py").stat().st_ino
    (live / "__pycache__").mkdir()
    (live / "__pycache__" / "keep.cpython-311.pyc").write_bytes(b"pyc")
    (live / "written-by-the-app.txt").write_text("runtime output")

    sha2 = repo.commit({"app.py": "A = 2\n", "old/gone.py": None, "new.py": "N\n"})
    _, written, removed = repo.deploy(sha2)
    assert written == ["app.py", "new.py"]
    assert removed == ["old/gone.py", "written-by-the-app.txt"]
    assert (live / "keep.py").stat().st_ino == kept_inode  # untouched: no watcher event
    assert not (live / "old").exists()  # an emptied directory goes too
    assert (live / "__pycache__" / "keep.cpython-311.pyc").exists()  # Python's, not ours
    assert live_commit(repo.root) == sha2
    # Publishing the same commit again changes nothing.
    _, written, removed = repo.deploy(sha2)
    assert (written, removed) == ([], [])


def test_main_script_is_written_after_the_modules_it_imports(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.deploy(repo.commit({"app.py": "import zz\n", "zz.py": "Z = 1\n", "a/b.py": "B = 1\n"}))
    order: list[str] = []
    real_replace = os.replace

    def spy(src: object, dst: object) -> None:
        if Path(str(dst)).is_relative_to(live_dir(repo.root)):
            order.append(Path(str(dst)).relative_to(live_dir(repo.root)).as_posix())
        real_replace(src, dst)  # type: ignore[arg-type]

    sha = repo.commit({"app.py": "import zz\n# 2\n", "zz.py": "Z = 2\n", "a/b.py": "B = 2\n"})
    worktree = sync_commit(repo_url=str(repo.work), commit=sha, root=repo.root)
    monkeypatch.setattr(os, "replace", spy)
    publish_live(repo.root, worktree, commit=sha)
    assert order[:3] == ["zz.py", "a/b.py", "app.py"]


def test_modes_links_and_file_directory_swaps_are_mirrored(repo: Repo) -> None:
    repo.deploy(repo.commit({"app.py": "A\n", "thing": "a file\n", "run.sh": "#!/bin/sh\n"}))
    live = live_dir(repo.root)
    assert not os.access(live / "run.sh", os.X_OK)
    (repo.work / "run.sh").chmod(0o755)
    (repo.work / "thing").unlink()
    os.symlink("app.py", repo.work / "alias.py")
    sha = repo.commit({"thing/inside.py": "I\n"})
    _, written, _ = repo.deploy(sha)
    assert written == ["alias.py", "run.sh", "thing/inside.py"]
    assert os.access(live / "run.sh", os.X_OK)
    assert os.readlink(live / "alias.py") == "app.py"
    assert (live / "thing").is_dir() and (live / "thing" / "inside.py").read_text() == "I\n"
    # ... and back: the directory becomes a file again.
    _, written, removed = repo.deploy(repo.commit({"thing/inside.py": None, "thing": "file\n"}))
    assert (live / "thing").read_text() == "file\n"
    assert written == ["thing"] and removed == []


def test_an_interrupted_publish_is_finished_by_the_next_one(repo: Repo) -> None:
    sha = repo.commit({"app.py": "A = 1\n", "b.py": "B\n"})
    repo.deploy(sha)
    live = live_dir(repo.root)
    (live / "b.py").write_text("half")  # as if killed mid-way
    (live / ".nakama-tmp-app.py").write_text("leftover")
    (repo.root / "live-commit").unlink()
    assert live_commit(repo.root) is None
    _, written, removed = repo.deploy(sha)
    assert written == ["b.py"] and removed == [".nakama-tmp-app.py"]
    assert live_commit(repo.root) == sha


# --- commands and eligibility ------------------------------------------------------------


def test_live_command_adds_the_rerun_flags_to_streamlit_commands_only() -> None:
    assert live_command(STREAMLIT_CMD) == [*STREAMLIT_CMD, *LIVE_FLAGS]
    assert live_command(["streamlit", "run", "main.py"]) == ["streamlit", "run", "main.py",
                                                             *LIVE_FLAGS]  # fmt: skip
    own = ["streamlit", "run", "app.py", "--server.fileWatcherType=poll"]
    assert live_command(own) == [*own, "--server.runOnSave", "true"]
    assert live_command(["streamlit", "run", "app.py", "--server.runOnSave", "false"]) is None
    assert live_command(["streamlit", "run", "app.py", "--server.fileWatcherType", "none"]) is None
    assert live_command(["python", "-m", "uvicorn", "main:app", "--port", "1"]) is None
    assert live_command(["python", "app.py"]) is None


def test_only_a_push_that_changed_the_main_script_alone_may_go_live() -> None:
    assert main_script(STREAMLIT_CMD) == "app.py"
    assert main_script(["streamlit", "run", "./src/main.py"]) == "src/main.py"
    assert main_script(["python", "-m", "uvicorn", "main:app"]) is None
    assert live_eligible(["app.py"], command=STREAMLIT_CMD)
    assert live_eligible(["app.py", "README.md"], command=STREAMLIT_CMD)
    assert not live_eligible(["app.py", "helpers.py"], command=STREAMLIT_CMD)
    assert not live_eligible(["helpers.py"], command=STREAMLIT_CMD)
    assert not live_eligible(["app.py", "nakama.toml"], command=STREAMLIT_CMD)
    assert not live_eligible(["app.py", ".streamlit/config.toml"], command=STREAMLIT_CMD)
    assert not live_eligible(["README.md"], command=STREAMLIT_CMD)  # nothing to rerun: no-op
    assert not live_eligible([], command=STREAMLIT_CMD)
    assert not live_eligible(["main.py"], command=["python", "-m", "uvicorn", "main:app"])


# --- a real Streamlit process ------------------------------------------------------------

APP = """\
import streamlit as st

st.title("{title}")
st.write("pid", __import__("os").getpid())
"""
CHROMIUM = os.environ.get("NAKAMA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def streamlit_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with Streamlit, made with the uv Nakama itself depends on."""
    from uv import find_uv_bin

    base = tmp_path_factory.mktemp("streamlit-env")
    uv, env = str(find_uv_bin()), {**os.environ, "UV_CACHE_DIR": str(base / "cache")}
    venv = base / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True,
                   env=env)  # fmt: skip
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                    "streamlit>=1.40,<2"], check=True, env=env, timeout=240)  # fmt: skip
    return venv / "bin" / "python"


@pytest.fixture
def streamlit_app(repo: Repo, streamlit_python: Path, tmp_path: Path) -> Iterator[str]:
    """The first commit published to live/ and Streamlit started there the live way."""
    repo.deploy(repo.commit({"app.py": APP.format(title="Version one")}))
    port = free_port()
    command = live_command([
        str(streamlit_python), "-m", "streamlit", "run", "app.py", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ])  # fmt: skip
    assert command is not None
    with (tmp_path / "app.log").open("wb") as log:
        proc = subprocess.Popen(command, cwd=live_dir(repo.root), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "app.log").read_text()
        try:
            if httpx.get(f"{url}_stcore/health", timeout=1).text == "ok":
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "streamlit did not become healthy"
        time.sleep(0.05)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_streamlit_reruns_a_published_main_script_without_a_restart(
    repo: Repo, streamlit_app: str
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            open_tab = browser.new_context().new_page()
            open_tab.goto(streamlit_app)
            open_tab.locator("h1", has_text="Version one").wait_for(timeout=30_000)
            pid_before = open_tab.locator("body").inner_text().split("pid")[-1].split()[0]

            sha2 = repo.commit({"app.py": APP.format(title="Version two")})
            started = time.monotonic()
            repo.deploy(sha2)
            # The open tab reruns by itself, in the same process ...
            open_tab.locator("h1", has_text="Version two").wait_for(timeout=10_000)
            elapsed = time.monotonic() - started
            assert pid_before in open_tab.locator("body").inner_text()
            # ... and a new session gets the new code too.
            fresh = browser.new_context().new_page()
            fresh.goto(streamlit_app)
            fresh.locator("h1", has_text="Version two").wait_for(timeout=30_000)
            assert "Version one" not in fresh.locator("body").inner_text()
            assert elapsed < 5, f"the open tab took {elapsed:.1f}s to show the new code"

            # With no session open, the next publish is picked up by the next visitor.
            open_tab.context.close()
            fresh.context.close()
            time.sleep(0.5)
            sha3 = repo.commit({"app.py": APP.format(title="Version three")})
            repo.deploy(sha3)
            later = browser.new_context().new_page()
            later.goto(streamlit_app)
            later.locator("h1", has_text="Version three").wait_for(timeout=30_000)
        finally:
            browser.close()
    assert live_commit(repo.root) == sha3
