"""A stateful GitLab fake for tests: the REST API Nakama uses, git over HTTP, and push hooks.

No GitLab can run on a test machine, so cluster-mode adapters are tested against this fake over
loopback HTTP with the real python-gitlab client. It keeps GitLab's shapes and status codes
(``shared/reference/gitlab/REST_API.md``) and is backed by real bare repositories, so commits,
compares and file reads are real git (:mod:`tests.fakes.gitlab_git`); the endpoints live in
:mod:`tests.fakes.gitlab_api`, the state, hooks, git route and fixture here. Like GitLab it fires
the project's push hooks, with GitLab's headers and body (:mod:`backend.local.push_payload`), after
a commit through the API and after a ``git push`` over smart HTTP; deliveries are asynchronous, as
GitLab's are, and :meth:`GitLabFake.wait_for_deliveries` waits for them. Failing hooks are disabled
as GitLab.com does. Triggered pipelines are recorded with their variables; tests finish them with
:meth:`GitLabFake.set_pipeline_status`. :meth:`GitLabFake.fail_next` makes the next API calls answer
429 or 5xx.

Tokens are principals (:mod:`tests.fakes.gitlab_rules`): a personal access token acts as its user
with that user's memberships, a group or project access token as a bot user with one membership, and
the administrator ``root`` (:data:`ADMIN_TOKEN`) sees everything. A project or group the token's
user cannot see is answered 404. The fake refuses what GitLab refuses: hook URLs on the local
network unless :attr:`GitLabFake.allow_local_requests` (the admin setting), pipeline variables below
the project's ``ci_pipeline_variables_minimum_override_role``, a trigger whose CI rules select no
job, pushes to the protected default branch below Maintainer and every force push to it, a
membership below an inherited one, a second membership of a bot. A deleted project is marked and
renamed (delayed deletion) until :meth:`GitLabFake.purge`; compares are cut at
:attr:`GitLabFake.diff_max_files`.

Use the ``gitlab_fake`` fixture: the fake serving on a free port with the layout of
``docs/cluster-install.md`` ("GitLab" prerequisites): the apps' group ``nakama-apps``, the GitOps
and pipelines projects under the group ``nakama``, and Nakama's token :attr:`GitLabFake.token`, a
personal access token of the dedicated user ``nakama``: Owner of ``nakama-apps``, Maintainer of
``nakama`` (so of the GitOps project the tests create there) and Owner of ``nakama/pipelines``,
whose trigger token :attr:`GitLabFake.trigger_token` it owns. The fixture allows hooks to the local
network (``allow_local_requests``), as an operator whose Nakama has a private address must (the
tests' receivers listen on 127.0.0.1). ``layout="group-token"`` builds the other documented layout
(one group access token on a top-level group holding the apps' subgroup, the GitOps and the
pipelines projects); ``layout="apps-group-token"`` the one the guide used to describe (a group
access token on the apps' group only), which GitLab does not allow to reach the rest.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import queue
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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

from backend.local.gitserver import GitHttpBackend, parse_basic_auth
from backend.local.post_receive import branch_commits, tag_target
from backend.local.push_payload import ProjectInfo, Pusher, build_push_payload
from nakama.clients.gitlab import GitLabClient
from nakama.settings import GitLabSettings
from tests.fakes import gitlab_git as git
from tests.fakes import gitlab_rules as rules
from tests.fakes.gitlab_api import (
    ACTIVE,
    ApiError,
    FakeAccessToken,
    FakeDeployToken,
    FakeGroup,
    FakeHook,
    FakeJob,
    FakePipeline,
    FakeProject,
    FakeUser,
    default_branch,
    install_routes,
    now_iso,
)
from tests.fakes.gitlab_oauth import OAuthProvider
from tests.support import free_port, serve

TOKEN = "glpat-fake-nakama-token-0123456789"  # Nakama's token in every layout
ADMIN_TOKEN = "glpat-fake-admin-token-0123456789"
TRIGGER_TOKEN = "glptt-fake-trigger-token-0123456789"
NAKAMA_USER = "nakama"
LAYOUTS = ("user", "group-token", "apps-group-token")
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
        layout: str = "user",
        profile: str = "self-managed",
        allow_local_requests: bool = False,
        auto_disable_hooks: bool = True,
        push_event_hooks_limit: int = 3,
        diff_max_files: int = 1000,
        instance_default_branch: str = "main",
        jobs_for: Callable[[dict[str, str]], list[tuple[str, str]]] | None = None,
    ) -> None:
        """``profile`` "gitlab.com" makes new projects refuse pipeline variables
        (``no_one_allowed``, GitLab.com's default since 17.7); "self-managed" lets Developers
        use them. ``jobs_for`` replaces reading the pipelines project's CI configuration."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        self.root = Path(root)
        self.repos_dir = self.root / "repos"
        self.url = ""
        self.token = token
        self.group = group
        self.trigger_token = trigger_token
        self.auto_disable_hooks = auto_disable_hooks
        self.push_event_hooks_limit = push_event_hooks_limit
        self.jobs_for = jobs_for
        self.diff_max_files = diff_max_files
        self.instance_default_branch = instance_default_branch
        self.pipeline_variables_default_role = (
            "no_one_allowed" if profile == "gitlab.com" else "developer"
        )
        # Admin area → Settings → Network → Outbound requests: "Allow requests to the local
        # network from webhooks and integrations", and the allowlist of hosts and addresses.
        self.allow_local_requests = allow_local_requests
        self.outbound_local_requests_allowlist: list[str] = []
        self.hosts: dict[str, str] = {}  # name → address, the resolver the URL blocker asks
        self.refused_hook_urls: list[tuple[str, str]] = []  # (url, why), as GitLab logs them
        # Delayed deletion renames the project (GitLab since gitlab!76675); False: the path stays
        # taken until the purge, as in older GitLab.
        self.rename_on_delete = True
        self.lock = threading.RLock()
        self._ids: dict[str, Iterator[int]] = {}
        self.users: dict[int, FakeUser] = {}
        self.tokens: dict[str, FakeUser] = {}  # every active API token → its user
        self.access_tokens: dict[str, FakeAccessToken] = {}
        self.trigger_owners: dict[str, int] = {}  # trigger token → its owner's user id
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
        self.admin.admin = True
        self.add_personal_token(self.admin, ADMIN_TOKEN)
        self.layout = layout
        self.group_id = self.add_group(group).id
        self.pipelines_project = self.create_project(pipelines_project, files=_pipeline_files())
        self.pipelines_project.ci_pipeline_variables_minimum_override_role = (
            self.pipeline_variables_default_role
        )
        self.nakama = self._build_layout(layout, token=token, group=group)
        owner = self.nakama if layout != "apps-group-token" else self.admin
        self.add_trigger_token(pipelines_project, trigger_token, owner=owner)

    def _build_layout(self, layout: str, *, token: str, group: str) -> FakeUser:
        """Nakama's token and what it may reach; the user it acts as."""
        pipelines = self.pipelines_project
        if layout == "user":
            user = self.add_user(NAKAMA_USER, name="Nakama")
            self.add_personal_token(user, token)
            self.set_membership(group, user, rules.OWNER)
            self.set_membership(pipelines.group.full_path, user, rules.MAINTAINER)
            self.set_membership(pipelines.full_path, user, rules.OWNER)
            return user
        if layout == "group-token":
            top = group.split("/", 1)[0]
            if "/" not in group or pipelines.full_path.split("/", 1)[0] != top:
                raise ValueError("group-token: the apps' group needs a parent holding all")
            return self.add_group_access_token(top, token, rules.OWNER)
        return self.add_group_access_token(group, token, rules.OWNER)

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
            project.ci_pipeline_variables_minimum_override_role = (
                self.pipeline_variables_default_role
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

    def add_trigger_token(
        self, project_path: str, token: str | None = None, *, owner: FakeUser | None = None
    ) -> str:
        """A pipeline trigger token of the project, owned by ``owner`` (the user its pipelines
        run as; the administrator if None)."""
        token = token or f"glptt-{uuid.uuid4().hex}"
        with self.lock:
            self.trigger_tokens[token] = self.project(project_path).id
            self.trigger_owners[token] = (owner or self.admin).id
        return token

    # --- tokens and memberships --------------------------------------------------------------
    def _add_token(self, found: FakeAccessToken) -> FakeAccessToken:
        with self.lock:
            found.id = self.next_id("access_token")
            self.access_tokens[found.token] = found
            self.tokens[found.token] = self.users[found.user_id]
        return found

    def add_personal_token(
        self,
        user: FakeUser,
        token: str | None = None,
        *,
        scopes: tuple[str, ...] = ("api",),
        expires_at: str | None = None,
    ) -> str:
        """A personal access token of ``user``: it acts with the user's memberships."""
        token = token or f"glpat-{uuid.uuid4().hex}"
        self._add_token(
            FakeAccessToken(token, user.id, "personal", "personal", scopes, expires_at=expires_at)
        )
        return token

    def _bot(self, kind: str, resource: Any) -> FakeUser:
        # GitLab names them group_<id>_bot_<hash> / project_<id>_bot_<hash>.
        name = f"{kind}_{resource.id}_bot_{uuid.uuid4().hex[:8]}"
        bot = self.add_user(name, name=f"{resource.path} bot", email=f"{name}@noreply.example")
        bot.bot = True
        return bot

    def add_group_access_token(
        self,
        group_path: str,
        token: str | None = None,
        access_level: int = rules.OWNER,
        *,
        scopes: tuple[str, ...] = ("api",),
        expires_at: str | None = None,
    ) -> FakeUser:
        """A group access token: a bot user, member of ``group_path`` (and so of everything in
        it) at ``access_level``, and of nothing else, ever. Its user."""
        with self.lock:
            group = self.add_group(group_path)
            bot = self._bot("group", group)
            group.members[bot.id] = access_level
            self._add_token(
                FakeAccessToken(
                    token or f"glpat-{uuid.uuid4().hex}", bot.id, "group", "nakama", scopes,
                    access_level=access_level, resource_id=group.id, expires_at=expires_at,
                )
            )  # fmt: skip
            return bot

    def add_project_access_token(
        self,
        project_path: str,
        token: str | None = None,
        access_level: int = rules.MAINTAINER,
        *,
        name: str = "token",
        scopes: tuple[str, ...] = ("api",),
        expires_at: str | None = None,
    ) -> FakeUser:
        """A project access token: a bot user, member of the project only. Its user."""
        with self.lock:
            project = self.project(project_path)
            bot = self._bot("project", project)
            project.members[bot.id] = access_level
            self._add_token(
                FakeAccessToken(
                    token or f"glpat-{uuid.uuid4().hex}", bot.id, "project", name, scopes,
                    access_level=access_level, resource_id=project.id, expires_at=expires_at,
                )
            )  # fmt: skip
            return bot

    def set_membership(self, path: str, user: FakeUser, access_level: int | None) -> None:
        """Make ``user`` a direct member of the group or project ``path`` (None: no member),
        directly in the state, as an administrator would in the UI."""
        with self.lock:
            project = self.find_project(path)
            target = project.members if project is not None else self.add_group(path).members
            if access_level is None:
                target.pop(user.id, None)
            else:
                target[user.id] = access_level

    def memberships_of(self, user_id: int) -> list[str]:
        """Full paths of the groups and projects ``user_id`` is a direct member of."""
        with self.lock:
            groups = [g.full_path for g in self.groups.values() if user_id in g.members]
            projects = [p.full_path for p in self.projects.values() if user_id in p.members]
        return groups + projects

    def access_token_for(self, headers: Any) -> FakeAccessToken | None:
        token = headers.get("private-token")
        auth = headers.get("authorization", "")
        if not token and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        found = self.access_tokens.get(token or "")
        return found if found is not None and found.active else None

    # --- delayed deletion ----------------------------------------------------------------------
    def mark_for_deletion(self, project: FakeProject) -> None:
        """What ``DELETE /projects/:id`` does: mark, and rename path and name so that the old
        path is free at once; the repository moves with the path."""
        with self.lock:
            suffix = f"-deletion_scheduled-{project.id}"
            project.path_before_deletion = project.path
            project.marked_for_deletion_on = now_iso()[:10]
            if not self.rename_on_delete:
                return
            new_repo = project.repo.with_name(f"{project.path}{suffix}.git")
            project.repo.rename(new_repo)
            project.repo = new_repo
            project.path, project.name = project.path + suffix, project.name + suffix

    def purge(self, path: str | None = None) -> list[str]:
        """Delete for good the projects marked for deletion (GitLab does it after the retention
        period), with their hooks, deploy tokens, pipelines and trigger tokens; their paths."""
        with self.lock:
            marked = [
                p
                for p in self.projects.values()
                if p.marked_for_deletion_on and path in (None, p.full_path)
            ]
            for project in marked:
                del self.projects[project.id]
                for pid in [i for i, x in self.pipelines.items() if x.project_id == project.id]:
                    del self.pipelines[pid]
                for token in [t for t, pid in self.trigger_tokens.items() if pid == project.id]:
                    del self.trigger_tokens[token]
                shutil.rmtree(project.repo, ignore_errors=True)
            return [p.full_path for p in marked]

    def marked_for_deletion(self) -> list[FakeProject]:
        return [p for p in self.projects.values() if p.marked_for_deletion_on]

    # --- pipelines -------------------------------------------------------------------------------
    def jobs_for_pipeline(
        self, project: FakeProject, *, sha: str, ref: str, variables: dict[str, str]
    ) -> list[tuple[str, str]]:
        """The jobs a trigger pipeline of ``project`` at ``sha`` gets: its ``.gitlab-ci.yml``
        (with local includes) evaluated for source ``trigger`` and ``variables``."""
        if self.jobs_for is not None:
            return self.jobs_for(variables)
        files = {
            path: git.read_blob(project.repo, blob)
            for path, (_mode, blob) in git.list_tree(project.repo, sha).items()
            if path.endswith((".yml", ".yaml"))
        }
        predefined = {
            "CI_PIPELINE_SOURCE": "trigger",
            "CI_COMMIT_REF_NAME": ref,
            "CI_COMMIT_BRANCH": ref,
            "CI_COMMIT_SHA": sha,
            "CI_DEFAULT_BRANCH": project.default_branch,
            "CI_PROJECT_PATH": project.full_path,
        }
        return rules.triggered_jobs(files, {**predefined, **variables}) or []

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
        """The user an API request acts as: its access token's (not expired, not revoked) or
        its OAuth token's; None answers 401."""
        found = self.access_token_for(headers)
        if found is not None:
            return self.users.get(found.user_id)
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        return self.oauth.user_for_token(token) if token else None

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
        found = self.access_token_for(headers)
        if found is not None:
            return _scope_refusal(found.scopes, method, path)
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

    def deliver_test(self, hook: FakeHook, project: FakeProject, pusher: FakeUser) -> Delivery:
        """``POST /projects/:id/hooks/:hook_id/test/push_events``: a push event for the default
        branch's head, sent now, even to a disabled hook; a success enables it again (GitLab's
        TestHookService, and WebHookService re-enabling a hook whose delivery succeeded)."""
        branch = default_branch(project)
        head = git.branch_head(project.repo, branch) or git.ZERO_SHA
        payload = self._push_payload(
            project, before=git.ZERO_SHA, after=head, ref=f"{_BRANCH}{branch}", pusher=pusher
        )
        item = _Outgoing(hook, project.full_path, payload, "Push Hook", uuid.uuid4(), uuid.uuid4())
        with httpx.Client(timeout=10.0, verify=hook.enable_ssl_verification) as client:
            self._deliver(item, client, test=True)
        return self.deliveries[-1]

    def _deliver(self, item: _Outgoing, client: httpx.Client, *, test: bool = False) -> None:
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
        off = hook.alert_status == "disabled" or bool(
            hook.disabled_until and now < hook.disabled_until
        )
        if off and not test:
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


def _scope_refusal(scopes: tuple[str, ...], method: str, path: str) -> Response | None:
    """GitLab's 403 for an access token whose scopes do not cover the request: ``api`` covers
    all, ``read_api`` reads, ``read_user`` reads /user and /users; ``read_repository`` and
    ``write_repository`` are for git only."""
    reads = method in ("GET", "HEAD")
    if "api" in scopes or (reads and "read_api" in scopes):
        return None
    if reads and "read_user" in scopes and path.startswith(("/api/v4/user", "/api/v4/users")):
        return None
    return JSONResponse(
        {
            "error": "insufficient_scope",
            "error_description": (
                "The request requires higher privileges than provided by the access token."
            ),
            "scope": "api read_api" if reads else "api",
        },
        status_code=403,
    )


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


_NOT_FOUND = (
    "The project you were looking for could not be found or you don't have permission to view it.\n"
)
# What the receive-pack's pre-receive hook (gitlab_git.PRE_RECEIVE) is told about the pusher.
_PUSH_ENV: ContextVar[dict[str, str] | None] = ContextVar("fake_gitlab_push_env", default=None)


class _GitRoute:
    """Git smart HTTP for ``/<namespace>/<project>.git/...`` through ``git http-backend``;
    after a push, the refs it moved fire the project's hooks. An access token (any user name)
    reads the repositories its user may see (Reporter and up) and pushes as Developer and up,
    the protected default branch as Maintainer, never by force (the repository's pre-receive
    hook refuses with GitLab's messages); a deploy token (its user name and token) with
    ``read_repository`` reads its own project's repository only."""

    def __init__(self, fake: GitLabFake) -> None:
        self.fake = fake
        self.backends: dict[str, GitHttpBackend] = {}
        self.locks: dict[int, asyncio.Lock] = {}

    def _authenticate(self, user: str, password: str, _client: str | None = None) -> bool:
        # What the credentials may reach is checked in __call__, before this runs.
        found = self.fake.access_tokens.get(password)
        if found is not None:
            return found.active
        return self.fake.deploy_token(user, password) is not None

    def _refusal(self, scope: dict[str, Any], project: Any) -> tuple[Response | None, int]:
        """GitLab's answer to credentials that may not do this request (None: go on), and the
        pusher's access level."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        credentials = parse_basic_auth(headers.get("authorization"))
        query = scope.get("query_string", b"").decode("latin-1")
        rest = scope["path_params"]["rest"]
        pushing = "git-receive-pack" in (rest, query.removeprefix("service="))

        def text(status: int, body: str) -> Response:
            return Response(body, status_code=status, media_type="text/plain")

        if credentials is None:
            return None, 0  # the backend asks for credentials
        token = self.fake.access_tokens.get(credentials[1])
        if token is not None:
            if not token.active:
                return None, 0  # the backend answers 401
            user = self.fake.users[token.user_id]
            if project is None or not rules.can_see_project(self.fake, user, project):
                return text(404, _NOT_FOUND), 0
            level = rules.project_access(self.fake, user, project)
            writes = bool({"api", "write_repository"} & set(token.scopes))
            reads = writes or "read_repository" in token.scopes
            if not reads or level < rules.REPORTER:
                return text(404 if not reads else 403, _NOT_FOUND), 0
            if pushing and (not writes or level < rules.DEVELOPER):
                return text(403, "You are not allowed to push code to this project.\n"), 0
            return None, level
        found = self.fake.deploy_token(*credentials)
        if found is None:
            return None, 0  # the backend answers 401
        owner, deploy = found
        if project is None or owner.id != project.id or "read_repository" not in deploy.scopes:
            return text(404, _NOT_FOUND), 0
        if pushing:
            return text(403, "You are not allowed to push code to this project.\n"), 0
        return None, 0

    def _hook_env(self, _project: str) -> dict[str, str]:
        return _PUSH_ENV.get() or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        params = scope["path_params"]
        namespace = str(params["namespace"])
        project = self.fake.find_project(f"{namespace}/{params['project']}")
        refusal, level = self._refusal(scope, project)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        backend = self.backends.get(namespace)
        if backend is None:
            backend = GitHttpBackend(
                repos_dir=self.fake.repos_dir / namespace,
                authenticate=self._authenticate,
                hook_env=self._hook_env,
            )
            self.backends[namespace] = backend
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
                protected = await run_in_threadpool(self._protected_branch, project)
                env = {"FAKE_GITLAB_LEVEL": str(level), "FAKE_GITLAB_PROTECTED": protected}
                if project.allow_force_push:
                    env["FAKE_GITLAB_FORCE"] = "1"
                _PUSH_ENV.set(env)
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

    def _protected_branch(self, project: FakeProject) -> str:
        with self.fake.lock:
            return default_branch(project)


@pytest.fixture
def gitlab_fake(tmp_path: Path) -> Iterator[GitLabFake]:
    """A serving GitLab fake; see the module docstring for what it holds."""
    with GitLabFake(tmp_path / "gitlab-fake", allow_local_requests=True).serving() as fake:
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
    "ADMIN_TOKEN",
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
