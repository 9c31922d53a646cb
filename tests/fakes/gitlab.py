"""A stateful GitLab fake for tests: the REST API Nakama uses, git over HTTP, and push hooks.

No GitLab can run on a test machine, so cluster-mode adapters are tested against this fake over
loopback HTTP with the real python-gitlab client. It keeps GitLab's shapes and status codes
(``shared/reference/gitlab/REST_API.md``) and is backed by real bare repositories, so commits,
compares and file reads are real git (:mod:`tests.fakes.gitlab_git`); the endpoints live in
:mod:`tests.fakes.gitlab_api`, the state, hooks, git route and fixture here. Like GitLab it fires
the project's push hooks, with GitLab's headers and body (:mod:`nakama.local.push_payload`), after a
commit through the API and after a ``git push`` over smart HTTP; deliveries are asynchronous, as
GitLab's are, and :meth:`GitLabFake.wait_for_deliveries` waits for them. Failing hooks are
disabled as GitLab.com does. Triggered pipelines are recorded with their variables; tests finish
them with :meth:`GitLabFake.set_pipeline_status`. :meth:`GitLabFake.fail_next` makes the next API
calls answer 429 or 5xx.

Use the ``gitlab_fake`` fixture: the fake serving on a free port, with the group ``nakama-apps``,
the user ``root`` owning :attr:`GitLabFake.token`, and the pipelines project ``nakama/pipelines``
whose trigger token is :attr:`GitLabFake.trigger_token`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nakama.clients.gitlab import GitLabClient
from nakama.local.gitserver import GitHttpBackend, parse_basic_auth
from nakama.local.post_receive import branch_commits, tag_target
from nakama.local.push_payload import ProjectInfo, Pusher, build_push_payload
from nakama.settings import GitLabSettings
from tests.fakes import gitlab_git as git
from tests.fakes.gitlab_api import (
    ACTIVE,
    ApiError,
    FakeDeployToken,
    FakeGroup,
    FakeHook,
    FakeJob,
    FakePipeline,
    FakeProject,
    FakeUser,
    install_routes,
    now_iso,
)
from tests.fakes.gitlab_oauth import OAuthProvider
from tests.support import free_port, serve

TOKEN = "glpat-fake-admin-token-0123456789"
TRIGGER_TOKEN = "glptt-fake-trigger-token-0123456789"
VERSION = "17.4.0"
_BRANCH, _TAG = "refs/heads/", "refs/tags/"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Delivery:
    """One hook request the fake sent (or skipped, for a disabled hook)."""

    hook_id: int
    project: str
    url: str
    event: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int | None = None
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # decoded, with the project or group path replaced by its id
    raw_path: str
    query: dict[str, str]


@dataclass
class _Injection:
    status: int
    remaining: int
    retry_after: str | None
    method: str | None
    path: str | None


@dataclass
class _Outgoing:
    hook: FakeHook
    project: str
    payload: dict[str, Any]
    event: str
    event_uuid: uuid.UUID
    idempotency_key: uuid.UUID


def default_jobs(variables: dict[str, str]) -> list[tuple[str, str]]:
    """(name, stage) of the jobs a triggered pipeline gets, as gitlab-ci-templates/ define."""
    kind = variables.get("NAKAMA_KIND")
    if kind == "build":
        return [("build-image", "build")]
    if kind == "reload":
        return [("reload-code", "deploy")]
    return [("job", "test")]


class GitLabFake:
    """The fake's state, its ASGI app (:attr:`asgi`) and the helpers tests inspect it with."""

    def __init__(
        self,
        root: Path,
        *,
        token: str = TOKEN,
        group: str = "nakama-apps",
        trigger_token: str = TRIGGER_TOKEN,
        pipelines_project: str = "nakama/pipelines",
        auto_disable_hooks: bool = True,
        push_event_hooks_limit: int = 3,
        jobs_for: Callable[[dict[str, str]], list[tuple[str, str]]] = default_jobs,
    ) -> None:
        self.root = Path(root)
        self.repos_dir = self.root / "repos"
        self.url = ""
        self.token = token
        self.group = group
        self.trigger_token = trigger_token
        self.auto_disable_hooks = auto_disable_hooks
        self.push_event_hooks_limit = push_event_hooks_limit
        self.jobs_for = jobs_for
        self.lock = threading.RLock()
        self._ids: dict[str, Iterator[int]] = {}
        self.users: dict[int, FakeUser] = {}
        self.tokens: dict[str, FakeUser] = {}
        self.groups: dict[int, FakeGroup] = {}
        self.projects: dict[int, FakeProject] = {}
        self.pipelines: dict[int, FakePipeline] = {}
        self.trigger_tokens: dict[str, int] = {}  # token → project id
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []
        self._injections: list[_Injection] = []
        self._outbox: queue.Queue[_Outgoing | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self.app = FastAPI()
        install_routes(self.app, self)
        self.oauth = OAuthProvider(self)
        self.oauth.install(self.app)
        self.app.add_route(
            "/{namespace:path}/{project}.git/{rest:path}", _GitRoute(self), methods=["GET", "POST"]
        )
        self.asgi = _Gate(self.app, self)
        self.admin = self.add_user("root", name="Administrator", email="admin@example.com")
        self.tokens[token] = self.admin
        self.group_id = self.add_group(group).id
        self.pipelines_project = self.create_project(pipelines_project, files=_pipeline_files())
        self.trigger_tokens[trigger_token] = self.pipelines_project.id

    # --- running ---------------------------------------------------------------------------
    @contextmanager
    def serving(self) -> Iterator[GitLabFake]:
        """Serve on a free loopback port and deliver hooks until the block ends."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._worker = threading.Thread(target=self._deliver_loop, daemon=True)
        self._worker.start()
        try:
            with serve(self.asgi, port=port):
                yield self
        finally:
            self._outbox.put(None)
            self._worker.join(timeout=30)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v4"

    def next_id(self, kind: str) -> int:
        return next(self._ids.setdefault(kind, itertools.count(1)))

    # --- state set-up ----------------------------------------------------------------------
    def add_user(
        self, username: str, *, name: str | None = None, email: str | None = None
    ) -> FakeUser:
        with self.lock:
            user = FakeUser(
                self.next_id("user"),
                username,
                name or username.title(),
                email or f"{username}@example.com",
            )
            self.users[user.id] = user
            return user

    def add_group(self, full_path: str) -> FakeGroup:
        with self.lock:
            found = self.find_group(full_path)
            if found:
                return found
            parent_path, _, path = full_path.rpartition("/")
            parent = self.add_group(parent_path) if parent_path else None
            group = FakeGroup(self.next_id("group"), path, full_path, parent.id if parent else None)
            self.groups[group.id] = group
            return group

    def create_project(
        self,
        full_path: str,
        *,
        files: dict[str, bytes] | None = None,
        default_branch: str = "main",
        visibility: str = "private",
        description: str = "",
    ) -> FakeProject:
        """A project (with ``files`` as a first commit) made directly, firing no hooks."""
        namespace, _, path = full_path.rpartition("/")
        with self.lock:
            group = self.add_group(namespace)
            repo = self.repos_dir / group.full_path / f"{path}.git"
            git.init_bare(repo, default_branch=default_branch)
            project = FakeProject(
                self.next_id("project"),
                path,
                path,
                group,
                default_branch,
                visibility,
                description,
                repo,
            )
            self.projects[project.id] = project
            if files:
                actions = [
                    {
                        "action": "create",
                        "file_path": p,
                        "encoding": "base64",
                        "content": base64.b64encode(c).decode(),
                    }
                    for p, c in sorted(files.items())
                ]
                git.apply_actions(
                    repo,
                    branch=default_branch,
                    base=None,
                    old_head=None,
                    actions=actions,
                    message="Initial commit",
                    author=git.Author(self.admin.name, self.admin.email),
                )
            return project

    def add_trigger_token(self, project_path: str, token: str | None = None) -> str:
        token = token or f"glptt-{uuid.uuid4().hex}"
        self.trigger_tokens[token] = self.project(project_path).id
        return token

    # --- lookups and inspection --------------------------------------------------------------
    def find_group(self, full_path: str) -> FakeGroup | None:
        return next(
            (g for g in self.groups.values() if g.full_path.lower() == full_path.lower()), None
        )

    def find_project(self, full_path: str) -> FakeProject | None:
        return next(
            (p for p in self.projects.values() if p.full_path.lower() == full_path.lower()), None
        )

    def project(self, path: str) -> FakeProject:
        """A project by full path, or by name inside :attr:`group`."""
        found = self.find_project(path if "/" in path else f"{self.group}/{path}")
        if found is None:
            raise KeyError(path)
        return found

    def hooks(self, path: str) -> list[FakeHook]:
        return list(self.project(path).hooks)

    def members(self, path: str) -> dict[str, int]:
        """username → access level of the project's direct members."""
        return {
            self.users[uid].username: level for uid, level in self.project(path).members.items()
        }

    def git_url(self, path: str, *, with_token: bool = True) -> str:
        project = self.project(path)
        parts = urlsplit(self.url)
        netloc = f"oauth2:{self.token}@{parts.netloc}" if with_token else parts.netloc
        return urlunsplit((parts.scheme, netloc, f"/{project.full_path}.git", "", ""))

    def triggered(self, project_path: str | None = None) -> list[FakePipeline]:
        """Pipelines created through the trigger API, oldest first."""
        wanted = self.project(project_path).id if project_path else None
        return [p for p in self.pipelines.values() if wanted in (None, p.project_id)]

    def set_pipeline_status(
        self, pipeline_id: int, status: str, *, trace: str | None = None
    ) -> None:
        """Move a pipeline and its jobs to ``status`` (running, success, failed, canceled …)."""
        with self.lock:
            pipeline = self.pipelines[pipeline_id]
            pipeline.status = status
            pipeline.updated_at = now_iso()
            done = status not in ACTIVE
            pipeline.finished_at = pipeline.updated_at if done else None
            for job in pipeline.jobs:
                job.status = status
                job.finished_at = pipeline.finished_at
                if trace is not None:
                    job.trace = trace

    def requests_to(self, method: str, path_contains: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests (matching ``method`` and containing ``path``,
        if given) with ``status``, and ``Retry-After`` if given."""
        after = (
            None
            if retry_after is None
            else (retry_after if isinstance(retry_after, str) else str(int(retry_after)))
        )
        with self.lock:
            self._injections.append(_Injection(status, count, after, method, path))

    def injected_response(self, method: str, path: str) -> Response | None:
        with self.lock:
            for injection in self._injections:
                if injection.remaining <= 0:
                    continue
                if injection.method not in (None, method):
                    continue
                if injection.path is not None and injection.path not in path:
                    continue
                injection.remaining -= 1
                headers = {"Retry-After": injection.retry_after} if injection.retry_after else {}
                reason = {
                    429: "Too Many Requests",
                    500: "Internal Server Error",
                    502: "Bad Gateway",
                    503: "Service Unavailable",
                    504: "Gateway Timeout",
                }.get(injection.status, "Error")
                return JSONResponse(
                    {"message": f"{injection.status} {reason}"},
                    status_code=injection.status,
                    headers=headers,
                )
        return None

    def deploy_token(self, username: str, token: str) -> tuple[FakeProject, FakeDeployToken] | None:
        """The active deploy token with these HTTP Basic credentials, and its project."""
        with self.lock:
            for project in self.projects.values():
                for found in project.deploy_tokens:
                    if (found.username, found.token) == (username, token) and not (
                        found.revoked or found.expired
                    ):
                        return project, found
        return None

    def user_for(self, headers: Any) -> FakeUser | None:
        token = headers.get("private-token")
        auth = headers.get("authorization", "")
        if not token and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        return self.tokens.get(token or "") or self.oauth.user_for_token(token or "")

    def api_refusal(self, headers: Any, method: str, path: str) -> Response | None:
        """GitLab's 403 for an authenticated API request it refuses: the user is blocked or
        deactivated, or the request is beyond an OAuth token's scopes."""
        user = self.user_for(headers)
        if user is not None and user.state != "active":
            reason = {
                "deactivated": "Your account has been deactivated by your administrator. "
                "Please log back in to reactivate your account.",
            }.get(user.state, "Your account has been blocked.")
            return JSONResponse({"message": f"403 Forbidden - {reason}"}, status_code=403)
        return self.oauth.refusal(headers, method, path)

    # --- pushes and hooks --------------------------------------------------------------------
    def after_push(
        self, project: FakeProject, updates: list[tuple[str, str, str]], pusher: FakeUser
    ) -> None:
        """Fire the project's hooks for ``(before, after, ref)`` updates as GitLab does: not at
        all when one push moved more refs than ``push_event_hooks_limit``."""
        updates = [u for u in updates if u[2].startswith((_BRANCH, _TAG))]
        if not updates or len(updates) > self.push_event_hooks_limit:
            return
        for before, after, ref in updates:
            hooks = [h for h in project.hooks if h.wants(ref)]
            if not hooks:
                continue
            payload = self._push_payload(
                project, before=before, after=after, ref=ref, pusher=pusher
            )
            event = "Tag Push Hook" if ref.startswith(_TAG) else "Push Hook"
            event_uuid = uuid.uuid4()
            for hook in hooks:
                self._enqueue(
                    _Outgoing(hook, project.full_path, payload, event, event_uuid, uuid.uuid4())
                )

    def _push_payload(
        self, project: FakeProject, *, before: str, after: str, ref: str, pusher: FakeUser
    ) -> dict[str, Any]:
        commits: list[Any] = []
        total = 0
        checkout = message = None
        if after != git.ZERO_SHA:
            if ref.startswith(_TAG):
                checkout, message = tag_target(project.repo, ref)
            else:
                commits, total = branch_commits(project.repo, ref=ref, before=before, after=after)
        info = ProjectInfo(
            id=project.id,
            name=project.path,
            namespace=project.group.full_path,
            web_url=f"{self.url}/{project.full_path}",
            git_http_url=f"{self.url}/{project.full_path}.git",
            default_branch=project.default_branch,
            description=project.description,
        )
        return build_push_payload(
            project=info,
            pusher=Pusher(name=pusher.username, id=pusher.id, email=pusher.email),
            ref=ref,
            before=before,
            after=after,
            commits=commits,
            total_commits_count=total,
            checkout_sha=checkout,
            tag_message=message,
        )

    def resend(self, delivery: Delivery) -> None:
        """Send a delivery again, as the UI's "Resend request" does: same Idempotency-Key."""
        project = self.project(delivery.project)
        hook = next(h for h in project.hooks if h.id == delivery.hook_id)
        key = uuid.UUID(delivery.headers["Idempotency-Key"])
        event_uuid = uuid.UUID(delivery.headers["X-Gitlab-Event-UUID"])
        self._enqueue(
            _Outgoing(hook, delivery.project, delivery.body, delivery.event, event_uuid, key)
        )

    def begin_work(self) -> None:
        with self._idle:
            self._pending += 1

    def end_work(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def wait_for_deliveries(self, timeout: float = 30.0) -> list[Delivery]:
        """Wait until every push in progress has been delivered; all deliveries so far."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout=timeout):
                raise AssertionError(f"hook deliveries still pending after {timeout}s")
        return list(self.deliveries)

    def _enqueue(self, outgoing: _Outgoing) -> None:
        self.begin_work()
        self._outbox.put(outgoing)

    def _deliver_loop(self) -> None:
        clients = {verify: httpx.Client(timeout=10.0, verify=verify) for verify in (True, False)}
        try:
            while (item := self._outbox.get()) is not None:
                try:
                    self._deliver(item, clients[item.hook.enable_ssl_verification])
                finally:
                    self.end_work()
        finally:
            for client in clients.values():
                client.close()

    def _deliver(self, item: _Outgoing, client: httpx.Client) -> None:
        hook = item.hook
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"GitLab/{VERSION}",
            "X-Gitlab-Event": item.event,
            "X-Gitlab-Instance": self.url,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
            "X-Gitlab-Event-UUID": str(item.event_uuid),
            "Idempotency-Key": str(item.idempotency_key),
        }
        if hook.token:
            headers["X-Gitlab-Token"] = hook.token
        record = Delivery(hook.id, item.project, hook.url, item.event, headers, item.payload)
        now = datetime.now(UTC)
        if hook.alert_status == "disabled" or (hook.disabled_until and now < hook.disabled_until):
            record.skipped = True
            self.deliveries.append(record)
            return
        parts = urlsplit(hook.url)
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        try:
            response = client.post(
                url, content=json.dumps(item.payload).encode(), headers=headers, auth=auth
            )
            record.status = response.status_code
            ok = response.status_code < 400
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            ok = False
        with self.lock:
            self.deliveries.append(record)
            self._count(hook, ok=ok, now=now)

    def _count(self, hook: FakeHook, *, ok: bool, now: datetime) -> None:
        """GitLab's auto-disabling: the 4th failure in a row disables for 1 min doubling to
        24 h, the 40th for good; a success resets."""
        if ok:
            hook.recent_failures, hook.alert_status, hook.disabled_until = 0, "executable", None
            return
        hook.recent_failures += 1
        if not self.auto_disable_hooks or hook.recent_failures <= 3:
            return
        if hook.recent_failures >= 40:
            hook.alert_status, hook.disabled_until = "disabled", None
            return
        backoff = min(max(60.0 * 2.0 ** (hook.recent_failures - 4), 60.0), 86400.0)
        hook.alert_status = "temporarily_disabled"
        hook.disabled_until = now + timedelta(seconds=backoff)


def _pipeline_files() -> dict[str, bytes]:
    """The pipelines project: a .gitlab-ci.yml including the repository's templates."""
    files = {}
    templates = sorted((_REPO_ROOT / "gitlab-ci-templates").glob("*.yml"))
    for path in templates:
        files[path.name] = path.read_bytes()
    include = "".join(f"  - local: {p.name}\n" for p in templates)
    files[".gitlab-ci.yml"] = (f"include:\n{include}" if include else "stages: [build]\n").encode()
    return files


class _Gate:
    """ASGI middleware for ``/api/v4``: resolves URL-encoded project and group paths to ids,
    records the request, answers injected failures, and checks the token."""

    _TRIGGER = re.compile(r"^/api/v4/projects/[^/]+/(ref/.+/)?trigger/pipeline$")

    def __init__(self, app: Any, fake: GitLabFake) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/v4/"):
            await self.app(scope, receive, send)
            return
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw = raw.split("?", 1)[0]
        path = self._decode(raw)
        scope = {**scope, "path": path, "raw_path": path.encode()}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        self.fake.requests.append(RecordedRequest(scope["method"], path, raw, query))
        injected = self.fake.injected_response(scope["method"], path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if injected is None and not self._TRIGGER.match(path) and not self.fake.user_for(headers):
            injected = JSONResponse({"message": "401 Unauthorized"}, status_code=401)
        if injected is None and not self._TRIGGER.match(path):
            injected = self.fake.api_refusal(headers, scope["method"], path)
        if injected is not None:
            await injected(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _decode(self, raw: str) -> str:
        parts = [unquote(p) for p in raw.split("/")]
        if len(parts) > 4 and parts[3] in ("projects", "groups") and not parts[4].isdigit():
            with self.fake.lock:
                found: Any = (
                    self.fake.find_project(parts[4])
                    if parts[3] == "projects"
                    else self.fake.find_group(parts[4])
                )
            parts[4] = str(found.id) if found else "0"
        return "/".join(parts)


class _GitRoute:
    """Git smart HTTP for ``/<namespace>/<project>.git/...`` through ``git http-backend``;
    after a push, the refs it moved fire the project's hooks. A personal token (any user name)
    reads and writes every repository; a deploy token (its user name and token) with
    ``read_repository`` reads its own project's repository only."""

    def __init__(self, fake: GitLabFake) -> None:
        self.fake = fake
        self.backends: dict[str, GitHttpBackend] = {}
        self.locks: dict[int, asyncio.Lock] = {}

    def _authenticate(self, user: str, password: str, _client: str | None = None) -> bool:
        # A deploy token's project and scope are checked in __call__, before this runs.
        return password in self.fake.tokens or self.fake.deploy_token(user, password) is not None

    def _deploy_token_refusal(self, scope: dict[str, Any], project: Any) -> Response | None:
        """GitLab's answer to a deploy token that may not do this request, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        credentials = parse_basic_auth(headers.get("authorization"))
        if credentials is None or credentials[1] in self.fake.tokens:
            return None
        found = self.fake.deploy_token(*credentials)
        if found is None:
            return None  # the backend answers 401
        owner, token = found
        if project is None or owner.id != project.id or "read_repository" not in token.scopes:
            return Response(
                "The project you were looking for could not be found or you don't have "
                "permission to view it.\n",
                status_code=404,
                media_type="text/plain",
            )
        query = scope.get("query_string", b"").decode("latin-1")
        if "git-receive-pack" in (scope["path_params"]["rest"], query.removeprefix("service=")):
            return Response(
                "You are not allowed to push code to this project.\n",
                status_code=403,
                media_type="text/plain",
            )
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        params = scope["path_params"]
        namespace = str(params["namespace"])
        found = self.fake.find_project(f"{namespace}/{params['project']}")
        refusal = self._deploy_token_refusal(scope, found)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        backend = self.backends.get(namespace)
        if backend is None:
            backend = GitHttpBackend(
                repos_dir=self.fake.repos_dir / namespace, authenticate=self._authenticate
            )
            self.backends[namespace] = backend
        project = self.fake.find_project(f"{namespace}/{params['project']}")
        if project is None or (scope["method"], params["rest"]) != ("POST", "git-receive-pack"):
            await backend(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        credentials = parse_basic_auth(headers.get("authorization"))
        pusher = self.fake.tokens.get(credentials[1]) if credentials else None
        self.fake.begin_work()
        try:
            lock = self.locks.setdefault(project.id, asyncio.Lock())
            async with lock:
                before = await run_in_threadpool(git.refs, project.repo)
                await backend(scope, receive, send)
                after = await run_in_threadpool(git.refs, project.repo)
            updates = [
                (before.get(ref, git.ZERO_SHA), after.get(ref, git.ZERO_SHA), ref)
                for ref in sorted(set(before) | set(after))
                if before.get(ref) != after.get(ref)
            ]
            if pusher is not None:
                await run_in_threadpool(self.fake.after_push, project, updates, pusher)
        finally:
            self.fake.end_work()


@pytest.fixture
def gitlab_fake(tmp_path: Path) -> Iterator[GitLabFake]:
    """A serving GitLab fake; see the module docstring for what it holds."""
    with GitLabFake(tmp_path / "gitlab-fake").serving() as fake:
        yield fake


@pytest.fixture
def gitlab_client(gitlab_fake: GitLabFake) -> Iterator[GitLabClient]:
    """The real GitLab client of Nakama, on the fake (two attempts, no waiting between)."""
    settings = GitLabSettings(
        url=gitlab_fake.url,
        token=SecretStr(TOKEN),
        trigger_token=SecretStr(TRIGGER_TOKEN),
        max_attempts=2,
    )
    client = GitLabClient(settings, sleep=lambda _s: None)
    yield client
    client.close()


__all__ = [
    "ApiError",
    "Delivery",
    "FakeDeployToken",
    "FakeGroup",
    "FakeHook",
    "FakeJob",
    "FakePipeline",
    "FakeProject",
    "FakeUser",
    "GitLabFake",
    "gitlab_client",
    "gitlab_fake",
]
