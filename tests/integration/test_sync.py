"""code_reloader.sync against real git: a bare repository made here, local, file:// and HTTP."""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from code_reloader.cli import sync_main
from code_reloader.sync import current_commit, sync_commit
from nakama.clients.git import GitError


@dataclass(frozen=True)
class Repo:
    bare: Path
    shas: list[str]  # oldest first


def _git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _make_repo(base: Path, commits: int) -> Repo:
    work = base / "work"
    _git("init", "--quiet", "--initial-branch=main", str(work))
    shas = []
    for i in range(commits):
        (work / "app.py").write_text(f"VERSION = {i + 1}\n")
        (work / f"page_{i + 1}.py").write_text("print('page')\n")
        _git("add", "-A", cwd=work)
        _git("commit", "--quiet", "-m", f"commit {i + 1}", cwd=work)
        shas.append(_git("rev-parse", "HEAD", cwd=work))
    bare = base / "app.git"
    _git("clone", "--quiet", "--bare", str(work), str(bare))
    return Repo(bare=bare, shas=shas)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return _make_repo(tmp_path / "src", commits=3)


def _worktrees(root: Path) -> set[str]:
    return {p.name for p in (root / ".worktrees").iterdir()}


def test_first_sync_points_a_relative_link_at_the_commit(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert current_commit(root) is None
    path = sync_commit(repo_url=str(repo.bare), commit=repo.shas[0], root=root)
    assert path == root / ".worktrees" / repo.shas[0]
    assert os.readlink(root / "current") == f".worktrees/{repo.shas[0]}"
    assert (root / "current" / "app.py").read_text() == "VERSION = 1\n"
    assert (root / ".git").is_dir()
    assert current_commit(root) == repo.shas[0]


def test_second_sync_swaps_and_prunes_the_old_worktree(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[0], root=root, keep=0)
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[1], root=root, keep=0)
    assert current_commit(root) == repo.shas[1]
    assert (root / "current" / "app.py").read_text() == "VERSION = 2\n"
    assert _worktrees(root) == {repo.shas[1]}
    listed = _git("--git-dir", str(root / ".git"), "worktree", "list", "--porcelain")
    assert repo.shas[0] not in listed and repo.shas[1] in listed


def test_keep_leaves_previous_worktrees_and_rollback_reuses_them(
    repo: Repo, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    for sha in repo.shas:
        sync_commit(repo_url=str(repo.bare), commit=sha, root=root, keep=1)
    assert _worktrees(root) == {repo.shas[1], repo.shas[2]}
    # Rolling back to the kept commit needs no fetch: it works with the remote gone.
    sync_commit(repo_url=str(tmp_path / "gone.git"), commit=repo.shas[1], root=root, keep=1)
    assert (root / "current" / "app.py").read_text() == "VERSION = 2\n"
    assert _worktrees(root) == {repo.shas[1], repo.shas[2]}


def test_syncing_the_current_commit_again_is_a_fast_no_op(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[0], root=root)
    before = os.lstat(root / "current")
    started = time.perf_counter()
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[0].upper(), root=root)
    elapsed = time.perf_counter() - started
    after = os.lstat(root / "current")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert elapsed < 0.05


def test_current_commit_is_none_for_a_missing_or_plain_link(tmp_path: Path) -> None:
    assert current_commit(tmp_path / "nowhere") is None
    (tmp_path / "current").mkdir()
    assert current_commit(tmp_path) is None
    (tmp_path / "other").symlink_to(".worktrees/abc123")
    assert current_commit(tmp_path, link="other") == "abc123"


def test_the_link_never_disappears_during_swaps(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path / "src", commits=20)
    root = tmp_path / "root"
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[0], root=root)
    failures: list[OSError] = []
    reads = 0
    done = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                os.readlink(root / "current")
                os.stat(root / "current")  # follows the link to the worktree
            except OSError as exc:
                failures.append(exc)
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for sha in repo.shas[1:] + repo.shas[:1]:
            sync_commit(repo_url=str(repo.bare), commit=sha, root=root)
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert reads > 100
    assert current_commit(root) == repo.shas[0]


def test_an_interrupted_sync_is_repaired_by_the_next(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sha1, sha2, sha3 = repo.shas
    sync_commit(repo_url=str(repo.bare), commit=sha1, root=root)
    git_dir = root / ".git"
    # A killed `git worktree add` of sha2: registered, locked, half checked out.
    _git("--git-dir", str(git_dir), "fetch", "--quiet", "--depth=1", str(repo.bare), sha2)
    half = root / ".worktrees" / sha2
    _git("--git-dir", str(git_dir), "worktree", "add", "--lock", "--detach", str(half), sha2)
    (half / "app.py").unlink()
    # A stray directory, a temporary link and a git lock file from a killed sync.
    (root / ".worktrees" / sha3).mkdir()
    (root / ".worktrees" / sha3 / "partial.py").write_text("")
    (root / ".current.nakama-tmp").symlink_to(".worktrees/nowhere")
    (git_dir / "shallow.lock").write_text("")

    sync_commit(repo_url=str(repo.bare), commit=sha2, root=root, keep=0)

    assert (root / "current" / "app.py").read_text() == "VERSION = 2\n"
    assert _worktrees(root) == {sha2}
    assert not os.path.lexists(root / ".current.nakama-tmp")
    assert not (git_dir / "shallow.lock").exists()
    sync_commit(repo_url=str(repo.bare), commit=sha3, root=root, keep=0)
    assert (root / "current" / "app.py").read_text() == "VERSION = 3\n"
    assert not (root / "current" / "partial.py").exists()


def test_a_half_initialised_repository_is_initialised(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".git").mkdir(parents=True)
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[0], root=root)
    assert current_commit(root) == repo.shas[0]


def test_fetch_over_a_file_url(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sync_commit(repo_url=repo.bare.as_uri(), commit=repo.shas[2], root=root, depth=1)
    assert (root / "current" / "app.py").read_text() == "VERSION = 3\n"
    assert (root / ".git" / "shallow").read_text().strip() == repo.shas[2]


def test_full_depth_fetch(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    sync_commit(repo_url=str(repo.bare), commit=repo.shas[2], root=root, depth=0)
    log = _git("-C", str(root / "current"), "log", "--format=%H")
    assert log.split() == repo.shas[::-1]


class _GitHTTP(http.server.BaseHTTPRequestHandler):
    """git smart HTTP through `git http-backend`, behind Basic auth (user nakama)."""

    project_root: Path
    password: str

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        expected = base64.b64encode(f"nakama:{self.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_USER": "nakama",
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_repo(repo: Repo) -> Iterator[str]:
    handler = type("Handler", (_GitHTTP,), {"project_root": repo.bare.parent, "password": "s3cr3t"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{repo.bare.name}"
    server.shutdown()
    server.server_close()


def test_https_password_comes_from_the_file_and_is_stored_nowhere(
    repo: Repo, http_repo: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    with pytest.raises(GitError) as failed:
        sync_commit(repo_url=http_repo, commit=repo.shas[0], root=root, password_file=secret)
    assert "wrong" not in str(failed.value)
    secret.write_text("s3cr3t\n")  # rotated: re-read on the next sync
    sync_commit(repo_url=http_repo, commit=repo.shas[0], root=root, password_file=secret)
    assert current_commit(root) == repo.shas[0]
    # Credentials inside the URL work too, and are not written down either.
    with_user = http_repo.replace("http://", "http://nakama:s3cr3t@")
    sync_commit(repo_url=with_user, commit=repo.shas[1], root=root)
    assert current_commit(root) == repo.shas[1]
    for path in (root / ".git").rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path


def test_sync_main_exit_codes(
    repo: Repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    ok = sync_main(["--repo", str(repo.bare), "--commit", repo.shas[1], "--root", str(root)])
    assert ok == 0
    assert capsys.readouterr().out.strip() == str(root / ".worktrees" / repo.shas[1])

    assert sync_main(["--repo", str(repo.bare), "--root", str(root)]) == 2  # no --commit
    assert sync_main(["--repo", str(repo.bare), "--commit", "abc", "--root", str(root)]) == 2
    capsys.readouterr()

    url = "http://user:hunter2@127.0.0.1:9/app.git"
    failed = sync_main(["--repo", url, "--commit", repo.shas[2], "--root", str(root)])
    err = capsys.readouterr().err
    assert failed == 1
    assert err.startswith("nakama reload sync: error:") and err.count("\n") == 1
    assert "hunter2" not in err
    assert current_commit(root) == repo.shas[1]
