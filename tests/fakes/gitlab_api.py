"""The GitLab fake's REST API: its data model and the ``/api/v4`` endpoints Nakama uses.

Shapes, status codes and messages follow ``shared/reference/gitlab/REST_API.md`` and GitLab's
API entities; repository reads and writes go to real git through :mod:`tests.fakes.gitlab_git`.
Handlers are plain functions ``(fake, req) -> body`` run in a worker thread under the fake's lock;
:class:`tests.fakes.gitlab.GitLabFake` holds the state and :func:`install_routes` wires them up.

Importing a repository by URL (``POST /projects`` with ``import_url``) is asynchronous, as in
GitLab. What was checked: ``shared/reference/gitlab/REST_API.md`` section 6 ("Repository by URL";
poll ``GET /projects/:id`` or ``GET /projects/:id/import`` for ``import_status`` none, scheduled,
started, finished or failed, and ``import_error``), GitLab's issue that the create answers
before the import is done (gitlab-foss#33314), the import status entity's fields
(``import_status``, ``import_error``, ``correlation_id``, ``failed_relations``: go-gitlab#1391,
gitlab!28662), GitLab's failure text ("Error importing repository <url> into <path> - <git's
message>", ansible#36495) with the URL's password masked (gitlabhq#7601), and that the
credentials in the URL are kept apart from it (``import_data``) and replaced when ``import_url``
is edited. Here: the answer says ``scheduled``; a thread moves the project to ``started`` after
:data:`IMPORT_DELAY_S` (or the fake's ``import_delay_s``), clones every branch and tag with real
git (the credentials through a credential helper), takes the source's HEAD as the default branch,
then ``finished``; a git failure (a bad URL, wrong credentials) is ``failed`` with
``import_error``. No push hook fires for an import. The fake allows imports from the local network
(GitLab's admin setting), unless its ``import_allow_local`` is False.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import math
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.fakes import gitlab_git as git

if TYPE_CHECKING:
    from tests.fakes.gitlab import GitLabFake

ACTIVE = ("created", "waiting_for_resource", "preparing", "pending", "running")
# What a project member's access_level may be (../shared/reference/gitlab/REST_API.md, section 5):
# Gitlab::Access without 0 (No access, not a membership) and 5 (Minimal access, top-level groups
# only); GitLab answers anything else 400 "access_level is not included in the list".
ACCESS_LEVELS = (10, 15, 20, 25, 30, 40, 50)
_BRANCH, _TAG = "refs/heads/", "refs/tags/"
_PATH_RULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class FakeUser:
    id: int
    username: str
    name: str
    email: str
    # "active", "blocked" or "deactivated": only an active user may use the API or sign in.
    state: str = "active"
    # When the account was made, as GitLab's /user says it (ISO 8601, UTC, milliseconds).
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    )

    def entity(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "state": self.state,
            "locked": False,
            "avatar_url": None,
            "web_url": f"{base}/{self.username}",
        }


@dataclass
class FakeGroup:
    id: int
    path: str
    full_path: str
    parent_id: int | None = None

    def entity(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.path,
            "path": self.path,
            "full_name": self.full_path,
            "full_path": self.full_path,
            "parent_id": self.parent_id,
            "visibility": "private",
            "web_url": f"{base}/groups/{self.full_path}",
        }


@dataclass
class FakeHook:
    id: int
    project_id: int
    url: str
    token: str | None
    push_events: bool = True
    branch_filter: str | None = None
    branch_filter_strategy: str = "wildcard"
    enable_ssl_verification: bool = True
    flags: dict[str, bool] = field(default_factory=dict)  # the other *_events
    created_at: str = field(default_factory=now_iso)
    alert_status: str = "executable"
    disabled_until: datetime | None = None
    recent_failures: int = 0

    def entity(self) -> dict[str, Any]:
        """The API's view: never the token."""
        until = self.disabled_until
        return {
            "id": self.id,
            "url": self.url,
            "name": None,
            "description": None,
            "project_id": self.project_id,
            "push_events": self.push_events,
            "push_events_branch_filter": self.branch_filter,
            "branch_filter_strategy": self.branch_filter_strategy,
            **{name: self.flags.get(name, False) for name in HOOK_FLAGS},
            "enable_ssl_verification": self.enable_ssl_verification,
            "alert_status": self.alert_status,
            "disabled_until": until.isoformat().replace("+00:00", "Z") if until else None,
            "url_variables": [],
            "custom_headers": [],
            "custom_webhook_template": None,
            "created_at": self.created_at,
        }

    def wants(self, ref: str) -> bool:
        if ref.startswith(_TAG):
            return self.flags.get("tag_push_events", False)
        branch = ref[len(_BRANCH) :]
        if not self.push_events:
            return False
        if self.branch_filter_strategy == "all_branches" or not self.branch_filter:
            return True
        if self.branch_filter_strategy == "regex":
            return re.search(self.branch_filter, branch) is not None
        return fnmatch.fnmatchcase(branch, self.branch_filter)


HOOK_FLAGS = (
    "tag_push_events",
    "merge_requests_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "pipeline_events",
    "job_events",
    "wiki_page_events",
    "deployment_events",
    "releases_events",
    "feature_flag_events",
    "repository_update_events",
    "resource_access_token_events",
)


@dataclass
class FakeJob:
    id: int
    name: str
    stage: str
    status: str = "pending"
    trace: str = ""
    created_at: str = field(default_factory=now_iso)
    finished_at: str | None = None


@dataclass
class FakePipeline:
    """A pipeline started through the trigger API, with the variables it was given."""

    id: int
    iid: int
    project_id: int
    ref: str
    sha: str
    variables: dict[str, str]
    source: str = "trigger"
    status: str = "pending"
    jobs: list[FakeJob] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    finished_at: str | None = None


DEPLOY_TOKEN_SCOPES = (
    "read_repository",
    "read_registry",
    "write_registry",
    "read_package_registry",
    "write_package_registry",
    "read_virtual_registry",
    "write_virtual_registry",
)


@dataclass
class FakeDeployToken:
    """A project deploy token: HTTP Basic ``username`` + ``token`` for git (read_repository)."""

    id: int
    name: str
    username: str
    token: str
    scopes: list[str]
    expires_at: str | None = None
    revoked: bool = False

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at < now_iso()[:10]

    def entity(self) -> dict[str, Any]:
        """The API's view: the token only in the answer to its creation."""
        return {
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "expires_at": f"{self.expires_at}T00:00:00.000Z" if self.expires_at else None,
            "revoked": self.revoked,
            "expired": self.expired,
            "scopes": list(self.scopes),
        }


@dataclass
class FakeProject:
    id: int
    path: str
    name: str
    group: FakeGroup
    default_branch: str
    visibility: str
    description: str
    repo: Path
    created_at: str = field(default_factory=now_iso)
    hooks: list[FakeHook] = field(default_factory=list)
    members: dict[int, int] = field(default_factory=dict)  # user id → access level
    deploy_tokens: list[FakeDeployToken] = field(default_factory=list)
    # Repository by URL: the URL without its credentials, which are kept apart (GitLab's
    # import_data); the states the import went through, oldest first.
    import_url: str | None = None
    import_credentials: tuple[str, str] | None = None
    import_status: str = "none"
    import_error: str | None = None
    import_history: list[str] = field(default_factory=list)

    @property
    def full_path(self) -> str:
        return f"{self.group.full_path}/{self.path}"


# --- plumbing ----------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answer: ``{"message": ...}`` (or ``{"error": ...}`` for a parameter problem)."""

    def __init__(self, status: int, message: Any, *, key: str = "message") -> None:
        super().__init__(str(message))
        self.status = status
        self.body = {key: message}


@dataclass
class Req:
    """One API request: path parameters, query and body parameters merged (body wins, as in
    Grape), headers (lower-case names) and the full URL (for pagination links)."""

    path: dict[str, str]
    params: dict[str, Any]
    headers: dict[str, str]
    url: Any
    user: Any = None


Handler = Callable[["GitLabFake", Req], Any]


def _put(params: dict[str, Any], key: str, value: str) -> None:
    nested = re.match(r"^(\w+)\[([^\]]*)\]$", key)
    if nested:
        bucket = params.get(nested[1])
        if not isinstance(bucket, dict):
            bucket = params[nested[1]] = {}
        bucket[nested[2]] = value
    else:
        params[key] = value


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        _put(params, key, value)
    body = await request.body()
    ctype = request.headers.get("content-type", "")
    if body and "json" in ctype:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, "The request body is not valid JSON", key="error") from exc
        if isinstance(data, dict):
            params.update(data)
    elif body and "x-www-form-urlencoded" in ctype:
        for key, value in parse_qsl(body.decode(), keep_blank_values=True):
            _put(params, key, value)
    return params


def _bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _required(req: Req, *names: str) -> None:
    for name in names:
        if req.params.get(name) in (None, ""):
            raise ApiError(400, f"{name} is missing", key="error")


def _paged(req: Req, items: list[Any]) -> Response:
    """GitLab's offset pagination: X-Page/X-Total headers and a Link header."""
    try:
        page = max(1, int(req.params.get("page") or 1))
        per_page = min(max(1, int(req.params.get("per_page") or 20)), 100)
    except ValueError as exc:
        raise ApiError(400, "page is invalid", key="error") from exc
    pages = max(1, math.ceil(len(items) / per_page))
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(number: int) -> str:
        return str(req.url.include_query_params(page=number, per_page=per_page))

    links = []
    if page < pages:
        links.append(f'<{link(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{link(page - 1)}>; rel="prev"')
    links += [f'<{link(1)}>; rel="first"', f'<{link(pages)}>; rel="last"']
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Total": str(len(items)),
        "X-Total-Pages": str(pages),
        "X-Next-Page": str(page + 1) if page < pages else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
        "Link": ", ".join(links),
    }
    return JSONResponse(chunk, headers=headers)


def _project(fake: GitLabFake, req: Req) -> FakeProject:
    raw = req.path.get("id", "")
    project = fake.projects.get(int(raw)) if raw.isdigit() else None
    if project is None:
        raise ApiError(404, "404 Project Not Found")
    return project


def _int(value: str, what: str) -> int:
    if not value.isdigit():
        raise ApiError(404, f"404 {what} Not Found")
    return int(value)


# --- entities ----------------------------------------------------------------------------------
def project_entity(fake: GitLabFake, project: FakeProject) -> dict[str, Any]:
    group = project.group
    host = fake.url.split("://", 1)[-1]
    return {
        "id": project.id,
        "description": project.description,
        "name": project.name,
        "name_with_namespace": f"{group.path} / {project.name}",
        "path": project.path,
        "path_with_namespace": project.full_path,
        "created_at": project.created_at,
        "last_activity_at": project.created_at,
        "default_branch": project.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": f"git@{host}:{project.full_path}.git",
        "http_url_to_repo": f"{fake.url}/{project.full_path}.git",
        "web_url": f"{fake.url}/{project.full_path}",
        "readme_url": None,
        "avatar_url": None,
        "namespace": {
            "id": group.id,
            "name": group.path,
            "path": group.path,
            "kind": "group",
            "full_path": group.full_path,
            "parent_id": group.parent_id,
            "avatar_url": None,
            "web_url": f"{fake.url}/groups/{group.full_path}",
        },
        "visibility": project.visibility,
        "empty_repo": not git.refs(project.repo),
        "archived": False,
        "import_url": project.import_url,
        "import_type": "git" if project.import_url else None,
        "import_status": project.import_status,
        "import_error": project.import_error,
        "ci_pipeline_variables_minimum_override_role": "developer",
    }


def _web(fake: GitLabFake, project: FakeProject) -> str:
    return f"{fake.url}/{project.full_path}"


def _member_entity(fake: GitLabFake, user_id: int, level: int) -> dict[str, Any]:
    return {
        **fake.users[user_id].entity(fake.url),
        "access_level": level,
        "created_at": now_iso(),
        "expires_at": None,
        "membership_state": "active",
    }


def pipeline_entity(
    fake: GitLabFake, pipeline: FakePipeline, *, detailed: bool = False
) -> dict[str, Any]:
    project = fake.projects.get(pipeline.project_id)
    web = f"{_web(fake, project)}/-/pipelines/{pipeline.id}" if project else None
    body: dict[str, Any] = {
        "id": pipeline.id,
        "iid": pipeline.iid,
        "project_id": pipeline.project_id,
        "sha": pipeline.sha,
        "ref": pipeline.ref,
        "status": pipeline.status,
        "source": pipeline.source,
        "created_at": pipeline.created_at,
        "updated_at": pipeline.updated_at,
        "web_url": web,
        "name": None,
    }
    if detailed:
        body.update(
            {
                "before_sha": git.ZERO_SHA,
                "tag": False,
                "yaml_errors": None,
                "user": fake.admin.entity(fake.url),
                "started_at": None,
                "finished_at": pipeline.finished_at,
                "committed_at": None,
                "duration": None,
                "queued_duration": None,
                "coverage": None,
                "detailed_status": {
                    "status": pipeline.status,
                    "text": pipeline.status,
                    "label": pipeline.status,
                    "group": pipeline.status,
                },
            }
        )
    return body


def job_entity(fake: GitLabFake, pipeline: FakePipeline, job: FakeJob) -> dict[str, Any]:
    project = fake.projects.get(pipeline.project_id)
    return {
        "id": job.id,
        "name": job.name,
        "stage": job.stage,
        "status": job.status,
        "ref": pipeline.ref,
        "tag": False,
        "allow_failure": False,
        "created_at": job.created_at,
        "started_at": None,
        "finished_at": job.finished_at,
        "duration": None,
        "failure_reason": "script_failure" if job.status == "failed" else None,
        "web_url": f"{_web(fake, project)}/-/jobs/{job.id}" if project else None,
        "pipeline": {
            "id": pipeline.id,
            "project_id": pipeline.project_id,
            "ref": pipeline.ref,
            "sha": pipeline.sha,
            "status": pipeline.status,
        },
        "commit": {"id": pipeline.sha},
        "user": fake.admin.entity(fake.url),
        "runner": None,
        "artifacts": [],
    }


# --- groups, projects, users, members ------------------------------------------------------
def get_group(fake: GitLabFake, req: Req) -> Any:
    group = fake.groups.get(_int(req.path["id"], "Group"))
    if group is None:
        raise ApiError(404, "404 Group Not Found")
    return group.entity(fake.url)


def create_project(fake: GitLabFake, req: Req) -> Any:
    p = req.params
    name, path = p.get("name"), p.get("path")
    if not name and not path:
        raise ApiError(
            400, "name, path are missing, at least one parameter must be provided", key="error"
        )
    path = str(path or re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-").lower())
    name = str(name or path)
    group = (
        fake.groups.get(int(p["namespace_id"]))
        if str(p.get("namespace_id", "")).isdigit()
        else None
    )
    if group is None:
        raise ApiError(404, "404 Namespace Not Found")
    if not _PATH_RULE.match(path) or path.endswith((".git", ".atom")):
        raise ApiError(
            400,
            {
                "path": [
                    "can contain only letters, digits, '_', '-' and '.'. "
                    "Cannot start with '-', end in '.git' or end in '.atom'"
                ]
            },
        )
    taken = [
        q
        for q in fake.projects.values()
        if q.group.id == group.id and (q.path.lower() == path.lower() or q.name == name)
    ]
    if taken:
        raise ApiError(
            400,
            {
                "project_namespace.name": ["has already been taken"],
                "name": ["has already been taken"],
                "path": ["has already been taken"],
            },
        )
    visibility = str(p.get("visibility") or "private")
    if visibility not in ("private", "internal", "public"):
        raise ApiError(400, "visibility does not have a valid value", key="error")
    import_url = p.get("import_url")
    source = _import_source(fake, str(import_url)) if import_url else None
    files = (
        {"README.md": f"# {name}\n".encode()}
        if _bool(p.get("initialize_with_readme")) and source is None
        else None
    )
    project = fake.create_project(
        f"{group.full_path}/{path}",
        files=files,
        default_branch=str(p.get("default_branch") or "main"),
        visibility=visibility,
        description=str(p.get("description") or ""),
    )
    project.name = name
    if source is not None:
        project.import_url, project.import_credentials = source
        _set_import_status(project, "scheduled")
        threading.Thread(
            target=_run_import, args=(fake, project.id), name="fake-import", daemon=True
        ).start()
    return 201, project_entity(fake, project)


# --- repository by URL ------------------------------------------------------------------------
IMPORT_DELAY_S = 0.05  # between "scheduled" and "started", as a queue's worker picks it up


def _import_source(fake: GitLabFake, url: str) -> tuple[str, tuple[str, str] | None]:
    """``import_url`` split into the URL GitLab shows (no credentials) and the credentials it
    keeps apart; GitLab's refusals of a URL it will not import from."""
    parts = urlsplit(url)
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError(400, {"import_url": ["is blocked: Only allowed schemes are http, https"]})
    local = host in ("localhost",) or host.startswith("127.") or host == "::1"
    if local and not getattr(fake, "import_allow_local", True):
        raise ApiError(400, {"import_url": ["is blocked: Requests to localhost are not allowed"]})
    netloc = parts.netloc.rsplit("@", 1)[-1]
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    credentials = None
    if parts.username is not None or parts.password is not None:
        credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    return clean, credentials


def _set_import_status(project: FakeProject, status: str, error: str | None = None) -> None:
    project.import_status, project.import_error = status, error
    project.import_history.append(status)


def _run_import(fake: GitLabFake, project_id: int) -> None:
    """The import worker: started, real git, then finished or failed."""
    time.sleep(getattr(fake, "import_delay_s", IMPORT_DELAY_S))
    with fake.lock:
        project = fake.projects.get(project_id)
        if project is None or project.import_url is None:
            return  # deleted meanwhile
        _set_import_status(project, "started")
        url, credentials, repo = project.import_url, project.import_credentials, project.repo
        full_path = project.full_path
    try:
        head = git.import_repository(repo, url, credentials=credentials)
        error = None
    except (git.GitApiError, OSError) as exc:
        head = None
        message = str(exc)
        for secret in credentials or ():
            if secret:
                message = message.replace(secret, "*****")
        error = f"Error importing repository {url} into {full_path} - {message}"
    with fake.lock:
        project = fake.projects.get(project_id)
        if project is None:
            return
        if error is not None:
            _set_import_status(project, "failed", error[:2000])
            return
        if head is not None:
            project.default_branch = head
        _set_import_status(project, "finished")


def get_import(fake: GitLabFake, req: Req) -> Any:
    """``GET /projects/:id/import``: the import status entity."""
    project = _project(fake, req)
    group = project.group
    return {
        "id": project.id,
        "description": project.description,
        "name": project.name,
        "name_with_namespace": f"{group.path} / {project.name}",
        "path": project.path,
        "path_with_namespace": project.full_path,
        "created_at": project.created_at,
        "import_status": project.import_status,
        "import_type": "git" if project.import_url else None,
        "correlation_id": f"fake-{project.id}",
        "failed_relations": [],
        "import_error": project.import_error,
    }


def edit_project(fake: GitLabFake, req: Req) -> Any:
    """``PUT /projects/:id``, for what Nakama edits: ``import_url`` (its credentials replace the
    kept ones: a URL without any leaves none) and ``default_branch``."""
    project = _project(fake, req)
    p = req.params
    if p.get("import_url"):
        project.import_url, project.import_credentials = _import_source(fake, str(p["import_url"]))
    if p.get("default_branch"):
        branch = str(p["default_branch"])
        if git.branch_head(project.repo, branch) is None:
            raise ApiError(400, {"default_branch": ["is invalid"]})
        project.default_branch = branch
    return project_entity(fake, project)


def get_project(fake: GitLabFake, req: Req) -> Any:
    return project_entity(fake, _project(fake, req))


def delete_project(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    del fake.projects[project.id]
    for pipeline_id in [i for i, p in fake.pipelines.items() if p.project_id == project.id]:
        del fake.pipelines[pipeline_id]
    for token in [t for t, pid in fake.trigger_tokens.items() if pid == project.id]:
        del fake.trigger_tokens[token]
    shutil.rmtree(project.repo, ignore_errors=True)
    return 202, {"message": "202 Accepted"}


def list_users(fake: GitLabFake, req: Req) -> Any:
    username = req.params.get("username")
    users = [
        u.entity(fake.url)
        for u in fake.users.values()
        if not username or u.username.lower() == str(username).lower()
    ]
    return _paged(req, users)


def current_user(fake: GitLabFake, req: Req) -> Any:
    """``GET /user``: the token's own user, with the fields only they see."""
    user = req.user
    return {
        **user.entity(fake.url),
        "created_at": user.created_at,
        "email": user.email,
        "public_email": "",
        "commit_email": user.email,
        "bot": False,
        "external": False,
        "two_factor_enabled": False,
    }


def get_user(fake: GitLabFake, req: Req) -> Any:
    user = fake.users.get(_int(req.path["user_id"], "User"))
    if user is None:
        raise ApiError(404, "404 User Not Found")
    return user.entity(fake.url)


def list_members(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    return _paged(req, [_member_entity(fake, uid, lvl) for uid, lvl in project.members.items()])


def _level(req: Req) -> int:
    _required(req, "access_level")
    try:
        level = int(req.params["access_level"])
    except (TypeError, ValueError):
        level = -1
    if level not in ACCESS_LEVELS:
        raise ApiError(400, {"access_level": ["is not included in the list"]})
    return level


def add_member(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    level = _level(req)
    if req.params.get("username"):
        user = next((u for u in fake.users.values() if u.username == req.params["username"]), None)
    else:
        _required(req, "user_id")
        user = fake.users.get(int(str(req.params["user_id"]).split(",")[0]))
    if user is None:
        raise ApiError(404, "404 User Not Found")
    if user.id in project.members:
        raise ApiError(409, "Member already exists")
    project.members[user.id] = level
    return 201, _member_entity(fake, user.id, level)


def _member(fake: GitLabFake, req: Req) -> tuple[FakeProject, int]:
    project = _project(fake, req)
    user_id = _int(req.path["user_id"], "Member")
    if user_id not in project.members:
        raise ApiError(404, "404 Member Not Found")
    return project, user_id


def get_member(fake: GitLabFake, req: Req) -> Any:
    project, user_id = _member(fake, req)
    return _member_entity(fake, user_id, project.members[user_id])


def edit_member(fake: GitLabFake, req: Req) -> Any:
    project, user_id = _member(fake, req)
    project.members[user_id] = _level(req)
    return _member_entity(fake, user_id, project.members[user_id])


def remove_member(fake: GitLabFake, req: Req) -> Any:
    project, user_id = _member(fake, req)
    del project.members[user_id]
    return 204, None


# --- repository ------------------------------------------------------------------------------
def create_commit(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    _required(req, "branch", "commit_message", "actions")
    p = req.params
    branch, actions = str(p["branch"]), p["actions"]
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise ApiError(400, "actions is invalid", key="error")
    head = git.branch_head(project.repo, branch)
    start = p.get("start_sha") or p.get("start_branch")
    force = _bool(p.get("force"))
    if head is not None and start and not force:
        raise ApiError(
            400,
            f"A branch called '{branch}' already exists. "
            "Switch to that branch in order to make changes",
        )
    if start:
        base = (
            git.resolve(project.repo, p["start_sha"])
            if p.get("start_sha")
            else git.branch_head(project.repo, str(p["start_branch"]))
        )
        if base is None:
            raise ApiError(400, "Invalid start branch or sha")
    elif head is None and git.refs(project.repo):
        raise ApiError(400, "You can only create or edit files when you are on a branch")
    else:
        base = head
    user = req.user or fake.admin
    author = git.Author(
        str(p.get("author_name") or user.name), str(p.get("author_email") or user.email)
    )
    try:
        sha = git.apply_actions(
            project.repo,
            branch=branch,
            base=base,
            old_head=head,
            actions=actions,
            message=str(p["commit_message"]),
            author=author,
        )
    except git.GitApiError as exc:
        raise ApiError(exc.status, exc.message) from exc
    entity = git.commit_entity(project.repo, sha, web_url=_web(fake, project))
    entity.update(
        stats=git.stats(project.repo, base, sha),
        status=None,
        project_id=project.id,
        last_pipeline=None,
    )
    fake.after_push(project, [(head or git.ZERO_SHA, sha, f"{_BRANCH}{branch}")], user)
    return 201, entity


def get_commit(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    sha = git.resolve(project.repo, req.path["sha"])
    if sha is None:
        raise ApiError(404, "404 Commit Not Found")
    return git.commit_entity(project.repo, sha, web_url=_web(fake, project))


def compare(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    _required(req, "from", "to")
    try:
        return git.compare(
            project.repo,
            str(req.params["from"]),
            str(req.params["to"]),
            straight=_bool(req.params.get("straight")),
            web_url=_web(fake, project),
        )
    except git.GitApiError as exc:
        raise ApiError(exc.status, exc.message) from exc


def tree(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    ref = str(req.params.get("ref") or project.default_branch)
    sha = git.resolve(project.repo, ref)
    if sha is None:
        raise ApiError(404, "404 Tree Not Found")
    entries = git.tree_entries(
        project.repo,
        sha,
        path=str(req.params.get("path") or ""),
        recursive=_bool(req.params.get("recursive")),
    )
    return _paged(req, entries)


def _file(fake: GitLabFake, req: Req, *, ref_required: bool) -> tuple[FakeProject, str, str, str]:
    project = _project(fake, req)
    if ref_required:
        _required(req, "ref")
    ref = str(req.params.get("ref") or project.default_branch)
    commit = git.resolve(project.repo, ref)
    if commit is None:
        raise ApiError(404, "404 Commit Not Found")
    path = req.path["file_path"]
    found = git.file_entry(project.repo, commit, path)
    if found is None:
        raise ApiError(404, "404 File Not Found")
    return project, commit, found[0], found[1]


def get_file(fake: GitLabFake, req: Req) -> Any:
    project, commit, mode, blob = _file(fake, req, ref_required=True)
    path = req.path["file_path"]
    content = git.read_blob(project.repo, blob)
    return {
        "file_name": path.rsplit("/", 1)[-1],
        "file_path": path,
        "size": len(content),
        "encoding": "base64",
        "content": base64.b64encode(content).decode(),
        "content_sha256": hashlib.sha256(content).hexdigest(),
        "ref": req.params["ref"],
        "blob_id": blob,
        "commit_id": commit,
        "last_commit_id": git.last_commit(project.repo, commit, path),
        "execute_filemode": mode == "100755",
    }


def get_raw_file(fake: GitLabFake, req: Req) -> Any:
    project, _commit, _mode, blob = _file(fake, req, ref_required=False)
    return Response(git.read_blob(project.repo, blob), media_type="text/plain; charset=utf-8")


def _branch_entity(fake: GitLabFake, project: FakeProject, name: str, sha: str) -> dict[str, Any]:
    default = name == project.default_branch
    return {
        "name": name,
        "commit": git.commit_entity(project.repo, sha, web_url=_web(fake, project)),
        "merged": False,
        "protected": default,
        "default": default,
        "developers_can_push": False,
        "developers_can_merge": False,
        "can_push": True,
        "web_url": f"{_web(fake, project)}/-/tree/{name}",
    }


def list_branches(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    heads = {
        r[len(_BRANCH) :]: s for r, s in git.refs(project.repo).items() if r.startswith(_BRANCH)
    }
    return _paged(req, [_branch_entity(fake, project, n, s) for n, s in sorted(heads.items())])


def get_branch(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    name = req.path["branch"]
    sha = git.branch_head(project.repo, name)
    if sha is None:
        raise ApiError(404, "404 Branch Not Found")
    return _branch_entity(fake, project, name, sha)


# --- hooks -----------------------------------------------------------------------------------
def _hook(fake: GitLabFake, req: Req) -> tuple[FakeProject, FakeHook]:
    project = _project(fake, req)
    hook_id = _int(req.path["hook_id"], "Hook")
    hook = next((h for h in project.hooks if h.id == hook_id), None)
    if hook is None:
        raise ApiError(404, "404 Not found")
    return project, hook


def _apply_hook_fields(hook: FakeHook, p: dict[str, Any]) -> None:
    url = p.get("url")
    if url is not None:
        if not re.match(r"^https?://[^/\s]+", str(url)):
            raise ApiError(422, "Invalid url given")
        if str(url) != hook.url and "token" not in p:
            hook.token = None  # GitLab resets the secret when the URL changes
        hook.url = str(url)
    if "token" in p:
        hook.token = str(p["token"]) if p["token"] else None
    hook.push_events = _bool(p.get("push_events"), hook.push_events)
    if "push_events_branch_filter" in p:
        hook.branch_filter = p["push_events_branch_filter"] or None
    strategy = str(p.get("branch_filter_strategy") or hook.branch_filter_strategy)
    if strategy not in ("wildcard", "regex", "all_branches"):
        raise ApiError(400, "branch_filter_strategy does not have a valid value", key="error")
    hook.branch_filter_strategy = strategy
    hook.enable_ssl_verification = _bool(
        p.get("enable_ssl_verification"), hook.enable_ssl_verification
    )
    for flag in HOOK_FLAGS:
        if flag in p:
            hook.flags[flag] = _bool(p[flag])


def list_hooks(fake: GitLabFake, req: Req) -> Any:
    return _paged(req, [h.entity() for h in _project(fake, req).hooks])


def add_hook(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    _required(req, "url")
    hook = FakeHook(id=fake.next_id("hook"), project_id=project.id, url="", token=None)
    _apply_hook_fields(hook, req.params)
    project.hooks.append(hook)
    return 201, hook.entity()


def get_hook(fake: GitLabFake, req: Req) -> Any:
    return _hook(fake, req)[1].entity()


def edit_hook(fake: GitLabFake, req: Req) -> Any:
    hook = _hook(fake, req)[1]
    _apply_hook_fields(hook, req.params)
    return hook.entity()


def delete_hook(fake: GitLabFake, req: Req) -> Any:
    project, hook = _hook(fake, req)
    project.hooks.remove(hook)
    return 204, None


# --- deploy tokens ---------------------------------------------------------------------------
def _deploy_token(fake: GitLabFake, req: Req) -> tuple[FakeProject, FakeDeployToken]:
    project = _project(fake, req)
    token_id = _int(req.path["token_id"], "Deploy Token")
    found = next((t for t in project.deploy_tokens if t.id == token_id), None)
    if found is None:
        raise ApiError(404, "404 Deploy Token Not Found")
    return project, found


def list_deploy_tokens(fake: GitLabFake, req: Req) -> Any:
    tokens = _project(fake, req).deploy_tokens
    active = req.params.get("active")
    if active is not None:
        tokens = [t for t in tokens if (not t.revoked and not t.expired) == _bool(active)]
    return _paged(req, [t.entity() for t in tokens])


def create_deploy_token(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    _required(req, "name", "scopes")
    scopes = req.params["scopes"]
    if isinstance(scopes, str):
        scopes = [scopes]
    if not isinstance(scopes, list) or not all(s in DEPLOY_TOKEN_SCOPES for s in scopes):
        raise ApiError(400, "scopes does not have a valid value", key="error")
    expires = req.params.get("expires_at")
    token_id = fake.next_id("deploy_token")
    username = str(req.params.get("username") or f"gitlab+deploy-token-{token_id}")
    token = FakeDeployToken(
        id=token_id,
        name=str(req.params["name"]),
        username=username,
        token=f"gldt-{secrets.token_urlsafe(15)}",
        scopes=list(scopes),
        expires_at=str(expires)[:10] if expires else None,
    )
    project.deploy_tokens.append(token)
    return 201, {**token.entity(), "token": token.token}


def get_deploy_token(fake: GitLabFake, req: Req) -> Any:
    return _deploy_token(fake, req)[1].entity()


def delete_deploy_token(fake: GitLabFake, req: Req) -> Any:
    project, token = _deploy_token(fake, req)
    project.deploy_tokens.remove(token)
    return 204, None


# --- pipelines -------------------------------------------------------------------------------
def trigger_pipeline(fake: GitLabFake, req: Req) -> Any:
    if req.headers.get("x-gitlab-event", "").lower() == "pipeline hook":
        raise ApiError(403, "403 Forbidden")
    _required(req, "token", "ref")
    project = _project(fake, req)
    if fake.trigger_tokens.get(str(req.params["token"])) != project.id:
        raise ApiError(404, "404 Not Found")
    variables = req.params.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        raise ApiError(400, "variables needs to be a map of key-valued strings")
    ref = str(req.params.get("ref") or req.path.get("ref") or "")
    sha = git.branch_head(project.repo, ref) or git.resolve(project.repo, f"{_TAG}{ref}")
    if sha is None:
        raise ApiError(400, {"base": ["Reference not found"]})
    iid = 1 + sum(1 for p in fake.pipelines.values() if p.project_id == project.id)
    pipeline = FakePipeline(fake.next_id("pipeline"), iid, project.id, ref, sha, dict(variables))
    pipeline.jobs = [
        FakeJob(fake.next_id("job"), name, stage)
        for name, stage in fake.jobs_for(pipeline.variables)
    ]
    fake.pipelines[pipeline.id] = pipeline
    return 201, pipeline_entity(fake, pipeline, detailed=True)


def _pipeline(fake: GitLabFake, req: Req) -> FakePipeline:
    project = _project(fake, req)
    pipeline = fake.pipelines.get(_int(req.path["pipeline_id"], "Pipeline"))
    if pipeline is None or pipeline.project_id != project.id:
        raise ApiError(404, "404 Not found")
    return pipeline


def list_pipelines(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    p = req.params
    found = [
        pipeline
        for pipeline in sorted(fake.pipelines.values(), key=lambda x: -x.id)
        if pipeline.project_id == project.id
        and all(
            p.get(k) in (None, getattr(pipeline, k)) for k in ("ref", "sha", "status", "source")
        )
    ]
    return _paged(req, [pipeline_entity(fake, x) for x in found])


def get_pipeline(fake: GitLabFake, req: Req) -> Any:
    return pipeline_entity(fake, _pipeline(fake, req), detailed=True)


def pipeline_variables(fake: GitLabFake, req: Req) -> Any:
    pipeline = _pipeline(fake, req)
    return [
        {"key": k, "value": v, "variable_type": "env_var"} for k, v in pipeline.variables.items()
    ]


def cancel_pipeline(fake: GitLabFake, req: Req) -> Any:
    pipeline = _pipeline(fake, req)
    if pipeline.status in ACTIVE:
        fake.set_pipeline_status(pipeline.id, "canceled")
    return pipeline_entity(fake, pipeline, detailed=True)


def delete_pipeline(fake: GitLabFake, req: Req) -> Any:
    del fake.pipelines[_pipeline(fake, req).id]
    return 204, None


def pipeline_jobs(fake: GitLabFake, req: Req) -> Any:
    pipeline = _pipeline(fake, req)
    return _paged(req, [job_entity(fake, pipeline, job) for job in pipeline.jobs])


def job_trace(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    job_id = _int(req.path["job_id"], "Job")
    for pipeline in fake.pipelines.values():
        for job in pipeline.jobs:
            if job.id == job_id and pipeline.project_id == project.id:
                return PlainTextResponse(job.trace)
    raise ApiError(404, "404 Job Not Found")


# --- wiring ----------------------------------------------------------------------------------
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/groups/{id}", get_group),
    ("POST", "/projects", create_project),
    ("GET", "/projects/{id}", get_project),
    ("PUT", "/projects/{id}", edit_project),
    ("GET", "/projects/{id}/import", get_import),
    ("DELETE", "/projects/{id}", delete_project),
    ("GET", "/user", current_user),
    ("GET", "/users", list_users),
    ("GET", "/users/{user_id}", get_user),
    ("GET", "/projects/{id}/members", list_members),
    ("POST", "/projects/{id}/members", add_member),
    ("GET", "/projects/{id}/members/{user_id}", get_member),
    ("PUT", "/projects/{id}/members/{user_id}", edit_member),
    ("DELETE", "/projects/{id}/members/{user_id}", remove_member),
    ("POST", "/projects/{id}/repository/commits", create_commit),
    ("GET", "/projects/{id}/repository/commits/{sha}", get_commit),
    ("GET", "/projects/{id}/repository/compare", compare),
    ("GET", "/projects/{id}/repository/tree", tree),
    ("GET", "/projects/{id}/repository/files/{file_path:path}/raw", get_raw_file),
    ("GET", "/projects/{id}/repository/files/{file_path:path}", get_file),
    ("GET", "/projects/{id}/repository/branches", list_branches),
    ("GET", "/projects/{id}/repository/branches/{branch:path}", get_branch),
    ("GET", "/projects/{id}/hooks", list_hooks),
    ("POST", "/projects/{id}/hooks", add_hook),
    ("GET", "/projects/{id}/hooks/{hook_id}", get_hook),
    ("PUT", "/projects/{id}/hooks/{hook_id}", edit_hook),
    ("DELETE", "/projects/{id}/hooks/{hook_id}", delete_hook),
    ("GET", "/projects/{id}/deploy_tokens", list_deploy_tokens),
    ("POST", "/projects/{id}/deploy_tokens", create_deploy_token),
    ("GET", "/projects/{id}/deploy_tokens/{token_id}", get_deploy_token),
    ("DELETE", "/projects/{id}/deploy_tokens/{token_id}", delete_deploy_token),
    ("POST", "/projects/{id}/trigger/pipeline", trigger_pipeline),
    ("POST", "/projects/{id}/ref/{ref:path}/trigger/pipeline", trigger_pipeline),
    ("GET", "/projects/{id}/pipelines", list_pipelines),
    ("GET", "/projects/{id}/pipelines/{pipeline_id}", get_pipeline),
    ("DELETE", "/projects/{id}/pipelines/{pipeline_id}", delete_pipeline),
    ("GET", "/projects/{id}/pipelines/{pipeline_id}/variables", pipeline_variables),
    ("POST", "/projects/{id}/pipelines/{pipeline_id}/cancel", cancel_pipeline),
    ("GET", "/projects/{id}/pipelines/{pipeline_id}/jobs", pipeline_jobs),
    ("GET", "/projects/{id}/jobs/{job_id}/trace", job_trace),
]


def _endpoint(fake: GitLabFake, handler: Handler) -> Callable[[Request], Any]:
    def run(req: Req) -> Any:
        with fake.lock:
            return handler(fake, req)

    async def endpoint(request: Request) -> Response:
        try:
            headers = {k.lower(): v for k, v in request.headers.items()}
            req = Req(
                dict(request.path_params),
                await _params(request),
                headers,
                request.url,
                fake.user_for(headers),
            )
            result = await run_in_threadpool(run, req)
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        if isinstance(result, Response):
            return result
        status, body = result if isinstance(result, tuple) else (200, result)
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status)

    return endpoint


def install_routes(app: FastAPI, fake: GitLabFake) -> None:
    """Add every ``/api/v4`` endpoint of the fake to ``app``."""
    for method, path, handler in ROUTES:
        app.add_route(f"/api/v4{path}", _endpoint(fake, handler), methods=[method])
