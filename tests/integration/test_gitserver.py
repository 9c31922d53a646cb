"""Clone, fetch and push with the real git CLI through Nakama's smart-HTTP server, and the Push
Hooks the post-receive hook delivers for them."""

from __future__ import annotations

import gzip
import hmac
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from backend.local.forge import LocalForge
from backend.local.gitserver import make_git_router
from nakama import __version__
from nakama.planning import ZERO_SHA
from tests.support import free_port, serve

ACCESS_TOKEN = "access-" + "x" * 20
HOOK_TOKEN = "hook-" + "y" * 20
FILES = {"streamlit_app.py": b"print('v1')\n", "requirements.txt": b"streamlit\n"}


@dataclass
class Deliveries:
    """What the stand-in /build-image/<project> and /code-reload/<project> endpoints got."""

    items: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            items, self.items = self.items, []
        return sorted(items, key=lambda d: d["path"])


@dataclass
class Server:
    url: str
    forge: LocalForge
    deliveries: Deliveries
    first: str  # the starter commit

    def remote(self, project: str = "demo", password: str = ACCESS_TOKEN) -> str:
        return self.url.replace("http://", f"http://nakama:{password}@") + f"/git/{project}.git"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    forge = LocalForge(repos_dir=tmp_path / "repos", base_url=base)
    first = forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    deliveries = Deliveries()
    app = FastAPI()
    app.include_router(
        make_git_router(
            repos_dir=forge.repos_dir,
            authenticate=lambda _user, password, _client: hmac.compare_digest(
                password, ACCESS_TOKEN
            ),
        )
    )

    async def record(request: Request) -> dict[str, bool]:
        item = {
            "path": request.url.path,
            "headers": dict(request.headers),
            "body": await request.json(),
        }
        with deliveries.lock:
            deliveries.items.append(item)
        return {"ok": True}

    app.add_api_route("/build-image/{project}", record, methods=["POST"])
    app.add_api_route("/code-reload/{project}", record, methods=["POST"])
    with serve(app, port=port) as url:
        yield Server(url, forge, deliveries, first)


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args[:2])} failed: {proc.stderr}")
    return proc


def clone(server: Server, tmp_path: Path, name: str = "work") -> Path:
    git("clone", "-q", server.remote(), name, cwd=tmp_path)
    return tmp_path / name


def commit(work: Path, path: str, content: str | bytes, message: str) -> str:
    target = work / path
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    git("add", path, cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def check_headers(server: Server, deliveries: list[dict[str, Any]], event: str) -> None:
    assert [d["path"] for d in deliveries] == ["/build-image/demo", "/code-reload/demo"]
    first, second = (d["headers"] for d in deliveries)
    for headers in (first, second):
        assert headers["x-gitlab-token"] == HOOK_TOKEN
        assert headers["x-gitlab-event"] == event
        assert headers["x-gitlab-instance"] == server.url
        assert headers["user-agent"] == f"Nakama/{__version__}"
        assert headers["content-type"] == "application/json"
    assert first["x-gitlab-event-uuid"] == second["x-gitlab-event-uuid"]
    assert first["idempotency-key"] != second["idempotency-key"]
    assert first["x-gitlab-webhook-uuid"] != second["x-gitlab-webhook-uuid"]
    assert deliveries[0]["body"] == deliveries[1]["body"]


def test_clone_commit_push_delivers_a_push_hook(server: Server, tmp_path: Path) -> None:
    work = clone(server, tmp_path)
    assert (work / "streamlit_app.py").read_bytes() == FILES["streamlit_app.py"]
    new = commit(work, "streamlit_app.py", "print('v2')\n", "Say v2\n\nwith a body")
    push = git("push", "origin", "main", cwd=work)
    assert f"remote: nakama: push to main received ({new[:8]}); deploying" in push.stderr
    assert HOOK_TOKEN not in push.stderr
    assert server.forge.head("demo", "main") == new
    deliveries = server.deliveries.take()
    check_headers(server, deliveries, "Push Hook")
    body = deliveries[0]["body"]
    assert (body["object_kind"], body["ref"]) == ("push", "refs/heads/main")
    assert (body["before"], body["after"], body["checkout_sha"]) == (server.first, new, new)
    assert body["total_commits_count"] == 1
    [pushed] = body["commits"]
    assert pushed["id"] == new
    assert (pushed["title"], pushed["message"]) == ("Say v2", "Say v2\n\nwith a body\n")
    assert pushed["added"] == pushed["removed"] == []
    assert pushed["modified"] == ["streamlit_app.py"]
    assert pushed["author"] == {"name": "Test Author", "email": "author@example.com"}
    assert body["project"]["path_with_namespace"] == "local/demo"
    assert body["user_name"] == "nakama"


def test_wrong_or_missing_credentials_are_refused(server: Server, tmp_path: Path) -> None:
    wrong = git("clone", server.remote("demo", "wrong"), "a", cwd=tmp_path, check=False)
    assert wrong.returncode != 0
    assert "Authentication failed" in wrong.stderr
    assert "wrong" not in wrong.stderr  # git masks the password
    anonymous = git("clone", f"{server.url}/git/demo.git", "b", cwd=tmp_path, check=False)
    assert anonymous.returncode != 0
    assert not (tmp_path / "a").exists()


def test_unknown_or_invalid_repository_is_not_found(server: Server, tmp_path: Path) -> None:
    for name in ("nope", "..%2Fdemo", "Demo"):
        proc = git("clone", server.remote(name), "x", cwd=tmp_path, check=False)
        assert proc.returncode != 0
        assert "not found" in proc.stderr


def test_large_push_and_fetch(server: Server, tmp_path: Path) -> None:
    work = clone(server, tmp_path)
    blob = os.urandom(5 * 1024 * 1024)
    new = commit(work, "data.bin", blob, "Add 5 MB of data")
    git("push", "origin", "main", cwd=work)
    assert server.forge.head("demo", "main") == new
    [added] = server.deliveries.take()[0]["body"]["commits"]
    assert added["added"] == ["data.bin"]
    again = clone(server, tmp_path, "again")
    assert (again / "data.bin").read_bytes() == blob


def test_fetch_sees_another_clones_push(server: Server, tmp_path: Path) -> None:
    mine = clone(server, tmp_path, "mine")
    local = commit(mine, "notes.txt", "note\n", "a local commit")
    theirs = clone(server, tmp_path, "theirs")
    new = commit(theirs, "other.txt", "x\n", "other")
    git("push", "-q", "origin", "main", cwd=theirs)
    git("fetch", "-q", "origin", cwd=mine)
    assert git("rev-parse", "origin/main", cwd=mine).stdout.strip() == new
    assert git("rev-parse", "main", cwd=mine).stdout.strip() == local


def test_http_contract(server: Server) -> None:
    auth = ("anyone", ACCESS_TOKEN)
    with httpx.Client(base_url=f"{server.url}/git/demo.git", timeout=30) as client:
        refused = client.get("/info/refs", params={"service": "git-upload-pack"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="nakama"'
        wrong = client.get(
            "/info/refs", params={"service": "git-upload-pack"}, auth=("nakama", "nope")
        )
        assert wrong.status_code == 401
        refs = client.get("/info/refs", params={"service": "git-receive-pack"}, auth=auth)
        assert refs.status_code == 200
        assert refs.headers["content-type"] == "application/x-git-receive-pack-advertisement"
        assert server.first.encode() in refs.content
        assert client.get("/info/refs", auth=auth).status_code == 403  # dumb protocol
        assert client.get("/HEAD", auth=auth).status_code == 404
        assert client.get("/git-upload-pack", auth=auth).status_code == 404
        # A gzip-compressed upload-pack request (git sends those for long negotiations).
        want = f"want {server.first}\n"
        request = f"{len(want) + 4:04x}{want}00000009done\n"
        fetched = client.post(
            "/git-upload-pack",
            content=gzip.compress(request.encode()),
            auth=auth,
            headers={
                "Content-Type": "application/x-git-upload-pack-request",
                "Content-Encoding": "gzip",
            },
        )
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "application/x-git-upload-pack-result"
        assert fetched.content.startswith(b"0008NAK\n")
        assert b"PACK" in fetched.content


def test_force_push_delivers_the_new_head(server: Server, tmp_path: Path) -> None:
    work = clone(server, tmp_path)
    old = commit(work, "a.txt", "a\n", "a")
    git("push", "-q", "origin", "main", cwd=work)
    server.deliveries.take()
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    new = commit(work, "b.txt", "b\n", "b instead of a")
    git("push", "-q", "--force", "origin", "main", cwd=work)
    assert server.forge.head("demo", "main") == new
    body = server.deliveries.take()[0]["body"]
    assert (body["before"], body["after"]) == (old, new)
    assert [c["id"] for c in body["commits"]] == [new]


def test_branch_create_and_delete(server: Server, tmp_path: Path) -> None:
    work = clone(server, tmp_path)
    git("checkout", "-q", "-b", "feature", cwd=work)
    shas = [commit(work, "f.txt", f"{n}\n", f"feature {n}") for n in range(3)]
    push = git("push", "origin", "feature", cwd=work)
    assert "only main deploys" in push.stderr
    body = server.deliveries.take()[0]["body"]
    assert (body["before"], body["after"]) == (ZERO_SHA, shas[-1])
    assert body["ref"] == "refs/heads/feature"
    assert [c["id"] for c in body["commits"]] == shas  # only what main does not have
    assert body["total_commits_count"] == 3
    git("push", "-q", "origin", "--delete", "feature", cwd=work)
    body = server.deliveries.take()[0]["body"]
    assert (body["before"], body["after"], body["checkout_sha"]) == (shas[-1], ZERO_SHA, None)
    assert (body["commits"], body["total_commits_count"]) == ([], 0)


def test_tag_push_delivers_a_tag_push_hook(server: Server, tmp_path: Path) -> None:
    work = clone(server, tmp_path)
    git("tag", "-a", "v1.0.0", "-m", "Release 1.0", cwd=work)
    tag_object = git("rev-parse", "v1.0.0", cwd=work).stdout.strip()
    push = git("push", "origin", "v1.0.0", cwd=work)
    assert "nakama: tag v1.0.0 received" in push.stderr
    deliveries = server.deliveries.take()
    check_headers(server, deliveries, "Tag Push Hook")
    body = deliveries[0]["body"]
    assert (body["object_kind"], body["event_name"]) == ("tag_push", "tag_push")
    assert body["ref"] == "refs/tags/v1.0.0"
    assert (body["before"], body["after"]) == (ZERO_SHA, tag_object)
    assert body["checkout_sha"] == server.first
    assert body["message"] == "Release 1.0"
    assert (body["commits"], body["total_commits_count"]) == ([], 0)
