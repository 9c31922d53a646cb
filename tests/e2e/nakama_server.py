"""Drive a real ``nakama up`` process, a real git client and real app processes."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.support import free_port

# A small app set by nakama.toml: answers GET / with VERSION (and six's version, if installed).
TINY_APP = """\
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1"


def extra():
    try:
        import six
        return f" six={six.__version__}"
    except ImportError:
        return ""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{VERSION}{extra()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("tiny app starting", VERSION, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

ADMIN_TOKEN = "nkm_test_admin_token_0123456789abcdef"


def write_tiny_kit(
    kit: Path, *, app: str = TINY_APP, requirements: str = "# no dependencies yet\n"
) -> Path:
    """A starter kit of ``app`` (TINY_APP), run by ``python app.py``, in the new folder ``kit``."""
    kit.mkdir(parents=True)
    (kit / "app.py").write_text(app)
    (kit / "nakama.toml").write_text('run = "python app.py"\n')
    (kit / "requirements.txt").write_text(requirements)
    return kit


def set_version(work: Path, version: str) -> None:
    """Change the ``VERSION = "..."`` line of the app in the work tree ``work``."""
    app = work / "app.py"
    app.write_text(re.sub(r'VERSION = "[^"]*"', f'VERSION = "{version}"', app.read_text()))


def wait_for(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class NakamaProcess:
    """``nakama up`` in a subprocess, with its own data dir and port."""

    def __init__(
        self,
        *,
        data_dir: Path,
        starter_kit: Path | None = None,
        uv_cache: Path | None = None,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])  # more options of `nakama up`
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"nakama-{self.port}.log"
        # Apps get ports from a range of their own, away from other servers on this machine.
        range_start = random.randrange(20000, 40000, 100)
        self.env = {
            **os.environ,
            "NAKAMA_ADMIN_TOKEN": ADMIN_TOKEN,
            "NAKAMA_RUNTIME__PORT_RANGE_START": str(range_start),
            "NAKAMA_RUNTIME__PORT_RANGE_END": str(range_start + 99),
        }
        if starter_kit is not None:
            self.env["NAKAMA_STARTER_KIT_DIR"] = str(starter_kit)
        if uv_cache is not None:
            self.env["NAKAMA_BUILDER__UV_CACHE_DIR"] = str(uv_cache)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    def start(self) -> None:
        exe = shutil.which("nakama")
        assert exe, "the `nakama` console script is not installed (pip install -e .)"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    "up",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    *self.extra_args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._healthy, timeout=60, what="nakama up to answer /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nakama up exited: {self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def close(self) -> None:
        self.stop()
        self.api.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def kill_apps(self) -> None:
        """After a SIGKILL of nakama up, its app processes live on; a crash takes them too."""
        subprocess.run(["pkill", "-KILL", "-f", str(self.data_dir / "apps")], check=False)

    # --- API helpers -----------------------------------------------------------------------
    def project(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"/api/v1/projects/{name}")
        r.raise_for_status()
        return dict(r.json())

    def pipelines(self, name: str) -> list[dict[str, Any]]:
        r = self.api.get(f"/api/v1/projects/{name}/pipelines")
        r.raise_for_status()
        return list(r.json())

    def wait_failed(self, name: str, commit: str, *, timeout: float) -> dict[str, Any]:
        """The pipeline of ``commit`` once it has failed."""

        def check() -> dict[str, Any] | None:
            return next(
                (
                    p
                    for p in self.pipelines(name)
                    if p["commit"] == commit and p["status"] == "failed"
                ),
                None,
            )

        return dict(wait_for(check, timeout=timeout, what=f"{name}@{commit[:8]} to fail"))

    def wait_deployed(self, name: str, commit: str, *, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            p = self.project(name)
            failed = [
                x for x in self.pipelines(name) if x["commit"] == commit and x["status"] == "failed"
            ]
            if failed:
                raise AssertionError(f"pipeline failed: {failed[0]['error']}")
            return p if p["deployed_commit"] == commit and p["status"] == "running" else None

        return dict(wait_for(check, timeout=timeout, interval=0.1, what=f"{name}@{commit[:8]}"))


@contextmanager
def running(
    data_dir: Path,
    *,
    starter_kit: Path | None = None,
    uv_cache: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[NakamaProcess]:
    """A started ``nakama up``; on exit it is stopped and any app process it left is killed."""
    server = NakamaProcess(
        data_dir=data_dir, starter_kit=starter_kit, uv_cache=uv_cache, extra_env=extra_env
    )
    try:
        server.start()
        yield server
    finally:
        server.close()
        server.kill_apps()


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def git_push(cwd: Path) -> str:
    """Push and return what the remote said (the hook's lines)."""
    out = subprocess.run(
        ["git", "push", "origin", "HEAD:main"], cwd=cwd, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"git push failed: {out.stderr}")
    return out.stderr


def clone(nakama: NakamaProcess, name: str, dest: Path) -> Path:
    url = nakama.project(name)["clone_url"].replace("http://", f"http://nakama:{ADMIN_TOKEN}@")
    git("clone", "-q", url, str(dest), cwd=dest.parent)
    return dest


def app_request(
    url: str, *, token: str | None = ADMIN_TOKEN, method: str = "GET", **kwargs: Any
) -> httpx.Response:
    """``url`` (an app's address, ``http://<name>.localhost:<port>/…``) through the gateway:
    Python does not resolve ``*.localhost`` as browsers do, so the request goes to 127.0.0.1 with
    the app's Host header. Sent with ``token`` (a member's API token; None: signed out)."""
    target, headers = gateway_target(url, token=token)
    headers.update(kwargs.pop("headers", {}) or {})
    kwargs.setdefault("timeout", 2)
    return httpx.request(method, target, headers=headers, **kwargs)


def gateway_target(url: str, *, token: str | None = ADMIN_TOKEN) -> tuple[str, dict[str, str]]:
    """Where to send a request for the app address ``url`` from Python, and the headers that
    make it one: 127.0.0.1 with the app's Host header, and ``token`` as a bearer token."""
    parts = urlsplit(url)
    headers = {}
    target = url
    if (parts.hostname or "").endswith(".localhost"):
        target = urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port or 80}"))
        headers["Host"] = parts.netloc
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return target, headers


def fetch_text(url: str, *, token: str | None = ADMIN_TOKEN) -> str | None:
    """The app's answer at ``url`` through the gateway, or None unless it is a 200."""
    try:
        r = app_request(url, token=token)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None
