"""Git smart HTTP for local mode: clone, fetch and push through the real ``git http-backend``.

Nakama serves ``/git/<project>.git/...`` itself so that local mode needs no web server besides
its own. The protocol is left to git: each request runs ``git http-backend`` as a CGI program in
a subprocess, with the request body streamed into it and its output streamed back, so a large
push never sits in memory. The route is a raw ASGI endpoint (not a FastAPI handler) because it
must read the request body while the response is already streaming.

A push (``git-receive-pack``) also hands the repository's post-receive hook what it needs of
Nakama to tell the pusher what the push will do (``hook_env``: the project's app address, the
environments directory, the planner's settings); the hook itself asks the server nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from nakama.clients.git import git_text, mask_credentials
from nakama.errors import Forbidden, RateLimited
from nakama.logs import get_logger
from nakama.names import name_problem

log = get_logger(__name__)

ROUTE_PATH = "/git/{project}.git/{rest:path}"
SERVICES = ("git-upload-pack", "git-receive-pack")
_CHUNK = 64 * 1024
_MAX_CGI_HEADER = 64 * 1024
_STDERR_LIMIT = 4000
_REALM = 'Basic realm="nakama"'


def find_http_backend() -> Path:
    """``git http-backend`` lives in git's exec path (``git --exec-path``)."""
    return Path(git_text(["--exec-path"])) / "git-http-backend"


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """(username, password) from a Basic ``Authorization`` header, or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or "\0" in decoded:
        return None
    return user, password


def parse_cgi_headers(block: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status code and headers of a CGI response header block (``Status:`` defaults to 200)."""
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"status":
            status = int(value.split()[0])
        else:
            headers.append((name, value))
    return status, headers


async def _plain(
    send: Send, status: int, text: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GitHttpBackend:
    """An ASGI app for ``/git/{project}.git/{rest}``, in front of ``git http-backend``."""

    def __init__(
        self,
        *,
        repos_dir: Path,
        authenticate: Callable[[str, str, str | None], bool],
        may_access: Callable[[str, str, str], bool] | None = None,
        hook_env: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.repos_dir = Path(repos_dir)
        self.authenticate = authenticate
        self.may_access = may_access
        self.hook_env = hook_env
        self.backend = find_http_backend()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        project, rest = str(params.get("project", "")), str(params.get("rest", ""))
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if name_problem(project) or (method, rest) not in (
            ("GET", "info/refs"),
            ("POST", "git-upload-pack"),
            ("POST", "git-receive-pack"),
        ):
            await _plain(send, 404, "not found\n")
            return
        if rest == "info/refs" and query not in (f"service={s}" for s in SERVICES):
            await _plain(send, 403, "only the smart HTTP protocol is served; upgrade git\n")
            return
        credentials = parse_basic_auth(headers.get("authorization"))
        client = (scope.get("client") or (None, 0))[0]
        try:
            known = credentials is not None and await run_in_threadpool(
                self.authenticate, *credentials, client
            )
        except RateLimited as exc:
            retry = str(math.ceil(exc.retry_after_s)).encode()
            await _plain(send, 429, f"{exc}\n", ((b"retry-after", retry),))
            return
        if credentials is None or not known:
            await _plain(
                send, 401, "authentication required\n", ((b"www-authenticate", _REALM.encode()),)
            )
            return
        # A repository the credentials may not reach is answered as if it did not exist; one
        # they may see but not change (``may_access`` raises Forbidden) says why.
        try:
            allowed = (self.repos_dir / f"{project}.git" / "HEAD").is_file() and (
                self.may_access is None
                or await run_in_threadpool(self.may_access, *credentials, project)
            )
        except Forbidden as exc:
            await _plain(send, 403, f"{exc}\n")
            return
        if not allowed:
            await _plain(send, 404, f"repository {project!r} not found\n")
            return
        env = self._cgi_env(
            scope, headers, project=project, rest=rest, query=query, user=credentials[0]
        )
        if rest == "git-receive-pack" and self.hook_env is not None:
            try:  # for the hook's forecast only: a push never fails for want of it
                extra = await run_in_threadpool(self.hook_env, project)
            except Exception:
                log.exception("push context not made", project=project)
            else:
                env.update({k: v.replace("\0", "") for k, v in extra.items()})
        await self._run(env, receive, send)

    def _cgi_env(
        self,
        scope: Scope,
        headers: dict[str, str],
        *,
        project: str,
        rest: str,
        query: str,
        user: str,
    ) -> dict[str, str]:
        # Built from scratch: the backend and the post-receive hook it runs see nothing of
        # Nakama's own environment (which holds secrets), only what git and the hook need.
        client = scope.get("client") or ("", 0)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GIT_PROJECT_ROOT": str(self.repos_dir.resolve()),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REQUEST_METHOD": scope["method"],
            "PATH_INFO": f"/{project}.git/{rest}",
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "REMOTE_USER": user[:100],
            "REMOTE_ADDR": str(client[0]),
        }
        for var in ("LANG", "LC_ALL", "TMPDIR"):
            if var in os.environ:
                env[var] = os.environ[var]
        if "content-length" in headers:
            env["CONTENT_LENGTH"] = headers["content-length"]
        if "content-encoding" in headers:
            env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
        if "git-protocol" in headers:
            env["GIT_PROTOCOL"] = headers["git-protocol"]
        return {k: v.replace("\0", "") for k, v in env.items()}

    async def _run(self, env: dict[str, str], receive: Receive, send: Send) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(self.backend),
            env=env,
            cwd=self.repos_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        pump = asyncio.create_task(self._pump_body(receive, proc.stdin))
        errors = asyncio.create_task(proc.stderr.read())
        try:
            await self._relay(proc.stdout, send)
            await pump
            code = await proc.wait()
            stderr = (await errors)[:_STDERR_LIMIT].decode(errors="replace").strip()
            if code != 0 or stderr:
                log.warning(
                    "git http-backend failed",
                    path=env["PATH_INFO"],
                    exit_code=code,
                    stderr=mask_credentials(stderr),
                )
        finally:
            for task in (pump, errors):
                task.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    @staticmethod
    async def _pump_body(receive: Receive, stdin: asyncio.StreamWriter) -> None:
        """Copy the request body into the backend; a client that goes away ends it early, and
        the backend fails on the short input by itself."""
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                if chunk:
                    stdin.write(chunk)
                    await stdin.drain()
                if not message.get("more_body", False):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the backend stopped reading; its output says why
        finally:
            stdin.close()

    @staticmethod
    async def _relay(stdout: asyncio.StreamReader, send: Send) -> None:
        """Parse the CGI header block, then stream the rest of the backend's output."""
        buffer = b""
        while True:
            cut = buffer.find(b"\r\n\r\n")
            sep = 4
            if cut < 0:
                cut, sep = buffer.find(b"\n\n"), 2
            if cut >= 0:
                break
            chunk = await stdout.read(_CHUNK)
            if not chunk or len(buffer) > _MAX_CGI_HEADER:
                await _plain(send, 502, "git http-backend gave no response\n")
                return
            buffer += chunk
        status, headers = parse_cgi_headers(buffer[:cut])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        body = buffer[cut + sep :]
        while True:
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            body = await stdout.read(_CHUNK)
            if not body:
                break
        await send({"type": "http.response.body", "body": b""})


def make_git_router(
    *,
    repos_dir: Path,
    authenticate: Callable[[str, str, str | None], bool],
    may_access: Callable[[str, str, str], bool] | None = None,
    hook_env: Callable[[str], Mapping[str, str]] | None = None,
) -> APIRouter:
    """A router serving ``/git/{project}.git/...`` (clone, fetch, push) for ``app.include_router``.

    ``authenticate(username, password, client address)`` decides HTTP Basic credentials (it
    may raise :class:`~nakama.errors.RateLimited`: 429 for a client with too many wrong ones);
    ``may_access(username, password, project)``, if given, then decides whether they reach
    that project's repository (if not, it is answered 404, as a missing one). Both run in a
    worker thread and may block, as does ``hook_env(project)``: variables for the
    post-receive hook of a push to ``project``.
    """
    router = APIRouter()
    backend = GitHttpBackend(
        repos_dir=repos_dir, authenticate=authenticate, may_access=may_access, hook_env=hook_env
    )
    # A class instance as endpoint makes Starlette call it as a raw ASGI app.
    router.routes.append(
        Route(ROUTE_PATH, backend, methods=["GET", "POST"], include_in_schema=False)
    )
    return router
