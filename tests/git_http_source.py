"""A git repository to import from, served over smart HTTP on 127.0.0.1 by git's own
``git http-backend`` (a CGI program) behind a small threaded HTTP server.

It stands for a repository on GitHub or a company's GitLab: public, or private behind HTTP Basic
auth (``username`` and ``password``, the token). It answers 401 with a ``WWW-Authenticate``
challenge to a request without the right credentials, as those hosts do, so git asks its
credential helper and reports "Authentication failed" for a wrong token. Every request is
recorded (method, path, the user it authenticated as, status), never its credentials; a test
reads :attr:`GitSource.requests` or :attr:`GitSource.log_lines`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nakama.clients.git import git_env, git_text, run_git


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user: str | None
    status: int


@dataclass
class GitSource:
    """Bare repositories under ``root``, at ``{url}/<name>.git``."""

    root: Path
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    @property
    def log_lines(self) -> list[str]:
        return [f"{r.method} {r.path} user={r.user or '-'} {r.status}" for r in self.requests]

    def repo_url(self, name: str) -> str:
        return f"{self.url}/{name}.git"

    def create(
        self, name: str, files: dict[str, str | bytes], *, branch: str = "main"
    ) -> tuple[Path, str]:
        """A bare repository ``name`` with ``files`` as one commit on ``branch`` (its HEAD);
        its path and the commit."""
        repo = self.root / f"{name}.git"
        run_git(["init", "--quiet", "--bare", "--template=", "-b", branch, str(repo)])
        sha = self.commit(name, files, branch=branch, message="First version")
        return repo, sha

    def commit(self, name: str, files: dict[str, str | bytes], *, branch: str, message: str) -> str:
        """A commit of ``files`` (the whole tree) on ``branch`` of repository ``name``."""
        repo = self.root / f"{name}.git"
        index = repo / "source-index"
        env = {"GIT_INDEX_FILE": str(index)}
        run_git(["read-tree", "--empty"], git_dir=repo, env=env)
        for path, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            blob = run_git(["hash-object", "-w", "--stdin"], git_dir=repo, input=data)
            sha = blob.stdout.decode().strip()
            run_git(
                ["update-index", "--add", "--cacheinfo", f"100644,{sha},{path}"],
                git_dir=repo,
                env=env,
            )
        tree = git_text(["write-tree"], git_dir=repo, env=env)
        index.unlink()
        parent = (
            run_git(
                ["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                git_dir=repo,
                check=False,
            )
            .stdout.decode()
            .strip()
        )
        args = ["commit-tree", tree, "-m", message, *(["-p", parent] if parent else [])]
        commit = git_text(args, git_dir=repo)
        run_git(["update-ref", f"refs/heads/{branch}", commit], git_dir=repo)
        return commit

    def authorized(self, header: str | None) -> str | bool | None:
        """The user a request's Authorization header names (None: no auth needed), or False."""
        if self.username is None:
            return None
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok = hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
            password.encode(), (self.password or "").encode()
        )
        return user if ok else False


def _handler(source: GitSource) -> type[BaseHTTPRequestHandler]:
    backend = Path(git_text(["--exec-path"])) / "git-http-backend"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            user = source.authorized(self.headers.get("Authorization"))
            if user is False:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="source"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                source.requests.append(Request(self.command, parts.path, None, 401))
                return
            body = self._body() if self.command == "POST" else b""
            env = git_env(
                {
                    "GIT_PROJECT_ROOT": str(source.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": str(user or ""),
                    "REMOTE_ADDR": self.client_address[0],
                }
            )
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            out = subprocess.run(
                [str(backend)], input=body, env=env, capture_output=True, check=False
            ).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = out.partition(b"\n\n")
            status = 200
            headers = []
            for line in head.decode(errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            source.requests.append(Request(self.command, parts.path, user or None, status))

    return Handler


@contextmanager
def serving(
    root: Path, *, username: str | None = None, password: str | None = None
) -> Iterator[GitSource]:
    """Serve the repositories under ``root`` on a free loopback port; with ``username`` and
    ``password`` every request needs them."""
    root.mkdir(parents=True, exist_ok=True)
    source = GitSource(root=root, username=username, password=password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
    httpd.daemon_threads = True
    source.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield source
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
