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
from tests.fakes import gitlab_rules as rules

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
    # A group or project access token's user (GitLab's project bot): one membership only.
    bot: bool = False
    admin: bool = False
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
class FakeAccessToken:
    """A token of the REST API: a user's personal access token, or a group or project access
    token, whose user is a bot made for it with one membership (its ``access_level`` in the
    group or project ``resource_id``)."""

    token: str
    user_id: int
    kind: str  # "personal", "group" or "project"
    name: str
    scopes: tuple[str, ...] = ("api",)
    access_level: int | None = None
    resource_id: int | None = None
    expires_at: str | None = None  # YYYY-MM-DD; the token works until that day begins
    revoked: bool = False
    id: int = 0

    @property
    def active(self) -> bool:
        return not self.revoked and (self.expires_at is None or now_iso()[:10] < self.expires_at)

    def entity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "user_id": self.user_id,
            "scopes": list(self.scopes),
            "access_level": self.access_level,
            "active": self.active,
            "revoked": self.revoked,
            "expires_at": self.expires_at,
            "created_at": now_iso(),
        }


@dataclass
class FakeGroup:
    id: int
    path: str
    full_path: str
    parent_id: int | None = None
    members: dict[int, int] = field(default_factory=dict)  # user id → access level

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
    user_id: int | None = None  # the trigger's owner, whom the pipeline runs as
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
    # The least role whose pipelines may carry variables (gitlab_rules.PIPELINE_VARIABLE_ROLES).
    ci_pipeline_variables_minimum_override_role: str = "developer"
    # Delayed deletion: the day it was marked, and the path it had before the rename.
    marked_for_deletion_on: str | None = None
    path_before_deletion: str | None = None
    # The protected default branch's "Allowed to force push" (off unless a Maintainer turns it on).
    allow_force_push: bool = False

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


def _project(fake: GitLabFake, req: Req, level: int = rules.GUEST) -> FakeProject:
    """The project of the path, if the token's user may see it (else 404 "404 Project Not Found",
    as for a project that does not exist) and has ``level`` in it (else 403)."""
    raw = req.path.get("id", "")
    project = fake.projects.get(int(raw)) if raw.isdigit() else None
    if project is None or not rules.can_see_project(fake, req.user, project):
        raise ApiError(404, "404 Project Not Found")
    if rules.project_access(fake, req.user, project) < level:
        raise ApiError(403, "403 Forbidden")
    return project


def _group(fake: GitLabFake, req: Req, level: int = rules.GUEST) -> FakeGroup:
    raw = req.path.get("id", "")
    group = fake.groups.get(int(raw)) if raw.isdigit() else None
    if group is None or not rules.can_see_group(fake, req.user, group):
        raise ApiError(404, "404 Group Not Found")
    if rules.group_access(fake, req.user, group) < level:
        raise ApiError(403, "403 Forbidden")
    return group


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
        "default_branch": default_branch(project),
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
        "ci_pipeline_variables_minimum_override_role": (
            project.ci_pipeline_variables_minimum_override_role
        ),
        "marked_for_deletion_on": project.marked_for_deletion_on,
        "marked_for_deletion_at": project.marked_for_deletion_on,
    }


def _permissions(fake: GitLabFake, user: FakeUser | None, project: FakeProject) -> dict[str, Any]:
    """``permissions`` of ``GET /projects/:id``: the user's direct membership and their highest
    membership of the project's groups (``API::Entities::ProjectWithAccess``)."""
    direct = project.members.get(user.id) if user is not None else None
    from_group = rules.inherited(fake, user.id, project.group)[0] if user is not None else 0

    def access(level: int | None) -> dict[str, int] | None:
        return {"access_level": level, "notification_level": 3} if level else None

    return {"project_access": access(direct), "group_access": access(from_group)}


def _web(fake: GitLabFake, project: FakeProject) -> str:
    return f"{fake.url}/{project.full_path}"


def default_branch(project: FakeProject) -> str:
    """The project's default branch as GitLab reports it: HEAD's branch, or, when HEAD names a
    branch that does not exist (a first push to another branch of an empty repository), the
    one Gitaly's ``FindDefaultBranchName`` picks: ``main``, ``master``, else the first."""
    heads = sorted(r[len(_BRANCH) :] for r in git.refs(project.repo) if r.startswith(_BRANCH))
    if not heads or project.default_branch in heads:
        return project.default_branch
    return next((b for b in ("main", "master") if b in heads), heads[0])


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
                "user": _pipeline_user(fake, pipeline),
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


def _pipeline_user(fake: GitLabFake, pipeline: FakePipeline) -> dict[str, Any] | None:
    user = fake.users.get(pipeline.user_id or 0)
    return user.entity(fake.url) if user is not None else None


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
        "user": _pipeline_user(fake, pipeline),
        "runner": None,
        "artifacts": [],
    }


# --- groups, projects, users, members ------------------------------------------------------
def get_group(fake: GitLabFake, req: Req) -> Any:
    return _group(fake, req).entity(fake.url)


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
    # Projects::CreateService: "unless ... current_user.can?(:create_projects, namespace)" adds
    # "namespace is not valid" (a group's project_creation_level is Maintainer by default).
    if (
        not rules.can_see_group(fake, req.user, group)
        or rules.group_access(fake, req.user, group) < rules.MAINTAINER
    ):
        raise ApiError(400, {"namespace": ["is not valid"]})
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
    initialize = _bool(p.get("initialize_with_readme")) and source is None
    files = {"README.md": f"# {name}\n".encode()} if initialize else None
    # default_branch takes effect only with initialize_with_readme: an empty repository's HEAD
    # is the instance's default branch name (gitlab#26261, gitlab#333426: "the repository must
    # be initialized in order to apply the requested branch name").
    branch = str(p.get("default_branch") or "") if initialize else ""
    project = fake.create_project(
        f"{group.full_path}/{path}",
        files=files,
        default_branch=branch or fake.instance_default_branch,
        visibility=visibility,
        description=str(p.get("description") or ""),
    )
    project.name = name
    project.ci_pipeline_variables_minimum_override_role = fake.pipeline_variables_default_role
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
            git.set_head(project.repo, head)
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
    kept ones: a URL without any leaves none), ``default_branch`` (HEAD moves to it) and
    ``ci_pipeline_variables_minimum_override_role``. Editing a project needs Maintainer."""
    project = _project(fake, req, rules.MAINTAINER)
    p = req.params
    role = p.get("ci_pipeline_variables_minimum_override_role")
    if role is not None:
        if role not in rules.PIPELINE_VARIABLE_ROLES:
            raise ApiError(
                400,
                "ci_pipeline_variables_minimum_override_role does not have a valid value",
                key="error",
            )
        # GitLab's docs: "If the minimum role was previously set to `owner` or
        # `no_one_allowed`, then you must have the Owner role in the project."
        strict = ("owner", "no_one_allowed")
        current = project.ci_pipeline_variables_minimum_override_role
        if (role in strict or current in strict) and rules.project_access(
            fake, req.user, project
        ) < rules.OWNER:
            raise ApiError(403, "403 Forbidden")
    if p.get("import_url"):
        project.import_url, project.import_credentials = _import_source(fake, str(p["import_url"]))
    if p.get("default_branch"):
        branch = str(p["default_branch"])
        if git.branch_head(project.repo, branch) is None:
            raise ApiError(400, {"default_branch": ["is invalid"]})
        project.default_branch = branch
        git.set_head(project.repo, branch)
    if role is not None:
        project.ci_pipeline_variables_minimum_override_role = str(role)
    return project_entity(fake, project)


def get_project(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    return {**project_entity(fake, project), "permissions": _permissions(fake, req.user, project)}


def delete_project(fake: GitLabFake, req: Req) -> Any:
    """Delayed deletion: the project is marked and renamed to ``<path>-deletion_scheduled-<id>``
    (gitlab#526081; gitlab!76675 renames so that the path is free at once), keeping its hooks,
    deploy tokens and pipelines until :meth:`GitLabFake.purge` (GitLab's deletion after the
    retention period). Deleting a project needs Owner."""
    project = _project(fake, req, rules.OWNER)
    if project.marked_for_deletion_on is not None:
        raise ApiError(400, "Project has been already marked for deletion")
    fake.mark_for_deletion(project)
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
        "bot": user.bot,
        "is_admin": user.admin,
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


def check_membership(
    fake: GitLabFake,
    user: FakeUser,
    level: int,
    *,
    project: FakeProject | None = None,
    group: FakeGroup | None = None,
) -> None:
    """``Member``'s validations (``app/models/member.rb``) for a new or changed membership:

    * ``validates :user_id, uniqueness: {message: 'project bots cannot be added to other groups
      / projects'}, if: :project_bot?``: a group or project access token's bot has the one
      membership it was made with (GitLab's spec ``members_spec.rb``: "returns 400" with
      ``json_response['message']['user_id']``);
    * ``higher_access_level_than_group``: a level below the user's highest membership of the
      source's ancestors is refused, "should be greater than or equal to %{access} inherited
      membership from group %{group_name}" (``members_spec.rb``: 400 with
      ``message.access_level``)."""
    source_members = project.members if project is not None else (group.members if group else {})
    if user.bot and user.id not in source_members and fake.memberships_of(user.id):
        raise ApiError(
            400, {"user_id": ["project bots cannot be added to other groups / projects"]}
        )
    parent = project.group if project is not None else None
    if group is not None and group.parent_id is not None:
        parent = fake.groups[group.parent_id]
    if parent is None:
        return
    highest, where = rules.inherited(fake, user.id, parent)
    if where is not None and highest > level:
        access = rules.ROLE_NAMES.get(highest, str(highest))
        raise ApiError(
            400,
            {
                "access_level": [
                    f"should be greater than or equal to {access} inherited membership "
                    f"from group {where.path}"
                ]
            },
        )


def _may_grant(fake: GitLabFake, req: Req, project: FakeProject, level: int) -> None:
    """Maintainers manage members up to Maintainer; making an Owner takes an Owner."""
    mine = rules.project_access(fake, req.user, project)
    if mine < rules.MAINTAINER or (level == rules.OWNER and mine < rules.OWNER):
        raise ApiError(403, "403 Forbidden")


def add_member(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req)
    level = _level(req)
    _may_grant(fake, req, project, level)
    if req.params.get("username"):
        user = next((u for u in fake.users.values() if u.username == req.params["username"]), None)
    else:
        _required(req, "user_id")
        user = fake.users.get(int(str(req.params["user_id"]).split(",")[0]))
    if user is None:
        raise ApiError(404, "404 User Not Found")
    if user.id in project.members:
        raise ApiError(409, "Member already exists")
    check_membership(fake, user, level, project=project)
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
    level = _level(req)
    _may_grant(fake, req, project, max(level, project.members[user_id]))
    check_membership(fake, fake.users[user_id], level, project=project)
    project.members[user_id] = level
    return _member_entity(fake, user_id, project.members[user_id])


def remove_member(fake: GitLabFake, req: Req) -> Any:
    project, user_id = _member(fake, req)
    _may_grant(fake, req, project, project.members[user_id])
    del project.members[user_id]
    return 204, None


def project_member_all(fake: GitLabFake, req: Req) -> Any:
    """``GET /projects/:id/members/all/:user_id``: the user's effective (inherited) membership."""
    project = _project(fake, req)
    user_id = _int(req.path["user_id"], "Member")
    user = fake.users.get(user_id)
    level = max(project.members.get(user_id, 0), rules.inherited(fake, user_id, project.group)[0])
    if user is None or not level:
        raise ApiError(404, "404 Member Not Found")
    return _member_entity(fake, user_id, level)


def group_member_all(fake: GitLabFake, req: Req) -> Any:
    """``GET /groups/:id/members/all/:user_id``."""
    group = _group(fake, req)
    user_id = _int(req.path["user_id"], "Member")
    level = rules.inherited(fake, user_id, group)[0]
    if user_id not in fake.users or not level:
        raise ApiError(404, "404 Member Not Found")
    return _member_entity(fake, user_id, level)


def token_self(fake: GitLabFake, req: Req) -> Any:
    """``GET /personal_access_tokens/self``: the token used, its scopes and expiry."""
    found = fake.access_token_for(req.headers)
    if found is None:
        raise ApiError(404, "404 Not Found")
    return found.entity()


def list_access_tokens(fake: GitLabFake, req: Req) -> Any:
    """``GET /projects/:id/access_tokens``: the project's access tokens (Maintainer)."""
    project = _project(fake, req, rules.MAINTAINER)
    found = [
        t.entity()
        for t in fake.access_tokens.values()
        if t.kind == "project" and t.resource_id == project.id
    ]
    return _paged(req, found)


def _protected(fake: GitLabFake, project: FakeProject) -> list[dict[str, Any]]:
    """The default branch, protected as GitLab protects it by default: Maintainers push and
    merge, nobody force-pushes (the instance's ``default_branch_protection_defaults``)."""
    return [
        {
            "id": project.id,
            "name": default_branch(project),
            "push_access_levels": [
                {"id": 1, "access_level": 40, "access_level_description": "Maintainers"}
            ],
            "merge_access_levels": [
                {"id": 1, "access_level": 40, "access_level_description": "Maintainers"}
            ],
            "allow_force_push": project.allow_force_push,
            "code_owner_approval_required": False,
        }
    ]


def list_protected_branches(fake: GitLabFake, req: Req) -> Any:
    return _paged(req, _protected(fake, _project(fake, req, rules.MAINTAINER)))


def get_protected_branch(fake: GitLabFake, req: Req) -> Any:
    found = [
        b
        for b in _protected(fake, _project(fake, req, rules.MAINTAINER))
        if b["name"] == req.path["name"]
    ]
    if not found:
        raise ApiError(404, "404 Not found")
    return found[0]


def list_triggers(fake: GitLabFake, req: Req) -> Any:
    """``GET /projects/:id/triggers`` (Maintainer): a trigger's token in full for its owner
    only, the first four characters for others (``API::Entities::Trigger``)."""
    project = _project(fake, req, rules.MAINTAINER)
    return _paged(
        req,
        [
            trigger_entity(fake, token, req.user)
            for token, pid in fake.trigger_tokens.items()
            if pid == project.id
        ],
    )


def trigger_entity(fake: GitLabFake, token: str, viewer: FakeUser | None) -> dict[str, Any]:
    owner = fake.users.get(fake.trigger_owners.get(token, 0))
    mine = owner is not None and viewer is not None and owner.id == viewer.id
    shown = token if mine else token[:4]
    return {
        "id": abs(hash(token)) % 100000,
        "description": "trigger",
        "token": shown,
        "owner": owner.entity(fake.url) if owner else None,
        "created_at": now_iso(),
        "last_used": None,
    }


def create_trigger(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.MAINTAINER)
    _required(req, "description")
    token = fake.add_trigger_token(project.full_path, owner=req.user)
    return 201, {**trigger_entity(fake, token, req.user), "description": req.params["description"]}


def application_settings(fake: GitLabFake, req: Req) -> Any:
    """``GET /application/settings``: administrators only."""
    if req.user is None or not req.user.admin:
        raise ApiError(403, "403 Forbidden")
    return {
        "allow_local_requests_from_web_hooks_and_services": fake.allow_local_requests,
        "outbound_local_requests_whitelist": list(fake.outbound_local_requests_allowlist),
        "default_branch_name": fake.instance_default_branch,
        "diff_max_files": fake.diff_max_files,
    }


# --- repository ------------------------------------------------------------------------------
def push_refusal(
    fake: GitLabFake, user: FakeUser | None, project: FakeProject, branch: str, *, force: bool
) -> str | None:
    """Why ``user`` may not push ``branch`` (a force push if ``force``), or None. The default
    branch is protected by default: Maintainers push, Developers do not (not even the first
    push), nobody force-pushes (``default_branch_protection_defaults``: ``allowed_to_push``
    Maintainer, ``allow_force_push`` false, ``developer_can_initial_push`` false)."""
    level = rules.project_access(fake, user, project)
    if level < rules.DEVELOPER:
        return "You are not allowed to push code to this project."
    if branch != default_branch(project):
        return None
    if level < rules.MAINTAINER:
        return "You are not allowed to push code to protected branches on this project."
    if force and not project.allow_force_push:
        return "You are not allowed to force push code to a protected branch on this project."
    return None


def create_commit(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
    _required(req, "branch", "commit_message", "actions")
    p = req.params
    branch, actions = str(p["branch"]), p["actions"]
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise ApiError(400, "actions is invalid", key="error")
    head = git.branch_head(project.repo, branch)
    start = p.get("start_sha") or p.get("start_branch")
    force = _bool(p.get("force"))
    refused = push_refusal(fake, req.user, project, branch, force=force and head is not None)
    if refused is not None:
        # The commits API: authorize_push_to_branch! -> forbidden!
        raise ApiError(403, f"403 Forbidden - {refused}")
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
    project = _project(fake, req, rules.REPORTER)
    sha = git.resolve(project.repo, req.path["sha"])
    if sha is None:
        raise ApiError(404, "404 Commit Not Found")
    return git.commit_entity(project.repo, sha, web_url=_web(fake, project))


def compare(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
    _required(req, "from", "to")
    try:
        return git.compare(
            project.repo,
            str(req.params["from"]),
            str(req.params["to"]),
            straight=_bool(req.params.get("straight")),
            web_url=_web(fake, project),
            max_files=fake.diff_max_files,
        )
    except git.GitApiError as exc:
        raise ApiError(exc.status, exc.message) from exc


def tree(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
    ref = str(req.params.get("ref") or default_branch(project))
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
    project = _project(fake, req, rules.REPORTER)
    if ref_required:
        _required(req, "ref")
    ref = str(req.params.get("ref") or default_branch(project))
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
    default = name == default_branch(project)
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
    project = _project(fake, req, rules.REPORTER)
    heads = {
        r[len(_BRANCH) :]: s for r, s in git.refs(project.repo).items() if r.startswith(_BRANCH)
    }
    return _paged(req, [_branch_entity(fake, project, n, s) for n, s in sorted(heads.items())])


def get_branch(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
    name = req.path["branch"]
    sha = git.branch_head(project.repo, name)
    if sha is None:
        raise ApiError(404, "404 Branch Not Found")
    return _branch_entity(fake, project, name, sha)


# --- hooks -----------------------------------------------------------------------------------
def _hook(fake: GitLabFake, req: Req) -> tuple[FakeProject, FakeHook]:
    project = _project(fake, req, rules.MAINTAINER)
    hook_id = _int(req.path["hook_id"], "Hook")
    hook = next((h for h in project.hooks if h.id == hook_id), None)
    if hook is None:
        raise ApiError(404, "404 Not found")
    return project, hook


def _apply_hook_fields(fake: GitLabFake, hook: FakeHook, p: dict[str, Any]) -> None:
    url = p.get("url")
    if url is not None:
        refused = (
            "URI is invalid"
            if not re.match(r"^https?://[^/\s]+", str(url))
            else rules.hook_url_refusal(
                str(url),
                allow_local=fake.allow_local_requests,
                allowlist=fake.outbound_local_requests_allowlist,
                instance=fake.url,
                hosts=fake.hosts,
            )
        )
        if refused is not None:
            fake.refused_hook_urls.append((str(url), refused))
            raise ApiError(422, "Invalid url given", key="error")
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
    return _paged(req, [h.entity() for h in _project(fake, req, rules.MAINTAINER).hooks])


def add_hook(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.MAINTAINER)
    _required(req, "url")
    hook = FakeHook(id=0, project_id=project.id, url="", token=None)
    _apply_hook_fields(fake, hook, req.params)  # a refused URL makes no hook, uses no id
    hook.id = fake.next_id("hook")
    project.hooks.append(hook)
    return 201, hook.entity()


def get_hook(fake: GitLabFake, req: Req) -> Any:
    return _hook(fake, req)[1].entity()


def edit_hook(fake: GitLabFake, req: Req) -> Any:
    hook = _hook(fake, req)[1]
    _apply_hook_fields(fake, hook, req.params)
    return hook.entity()


def hook_test(fake: GitLabFake, req: Req) -> Any:
    """``POST /projects/:id/hooks/:hook_id/test/:trigger`` (push_events only)."""
    project, hook = _hook(fake, req)
    if req.path["trigger"] != "push_events":
        raise ApiError(400, "trigger does not have a valid value", key="error")
    if git.branch_head(project.repo, default_branch(project)) is None:
        raise ApiError(422, "Ensure the project has at least one commit.")
    fake.deliver_test(hook, project, req.user or fake.admin)
    return 201, {"message": "201 Created"}


def delete_hook(fake: GitLabFake, req: Req) -> Any:
    project, hook = _hook(fake, req)
    project.hooks.remove(hook)
    return 204, None


# --- deploy tokens ---------------------------------------------------------------------------
def _deploy_token(fake: GitLabFake, req: Req) -> tuple[FakeProject, FakeDeployToken]:
    project = _project(fake, req, rules.MAINTAINER)
    token_id = _int(req.path["token_id"], "Deploy Token")
    found = next((t for t in project.deploy_tokens if t.id == token_id), None)
    if found is None:
        raise ApiError(404, "404 Deploy Token Not Found")
    return project, found


def list_deploy_tokens(fake: GitLabFake, req: Req) -> Any:
    tokens = _project(fake, req, rules.MAINTAINER).deploy_tokens
    active = req.params.get("active")
    if active is not None:
        tokens = [t for t in tokens if (not t.revoked and not t.expired) == _bool(active)]
    return _paged(req, [t.entity() for t in tokens])


def create_deploy_token(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.MAINTAINER)
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
    # lib/api/ci/triggers.rb: find_project(params[:id]), then the trigger token alone decides;
    # the caller is not authenticated. The pipeline runs as the trigger's owner.
    raw = req.path.get("id", "")
    project = fake.projects.get(int(raw)) if raw.isdigit() else None
    token = str(req.params["token"])
    if project is None or fake.trigger_tokens.get(token) != project.id:
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
    # Ci::CreatePipelineService's chain (validate/variables): "if variables.present? &&
    # !can?(current_user, :set_pipeline_variables, project) -> error('Insufficient permissions
    # to set pipeline variables')"; the pipeline is not persisted, so the trigger API answers
    # 400 with the errors (Ci::PipelineTriggerService#pipeline_service_response).
    owner = fake.users.get(fake.trigger_owners.get(token, 0))
    needed = rules.PIPELINE_VARIABLE_ROLES[project.ci_pipeline_variables_minimum_override_role]
    if variables and rules.project_access(fake, owner, project) < needed:
        raise ApiError(400, {"base": ["Insufficient permissions to set pipeline variables"]})
    try:
        jobs = fake.jobs_for_pipeline(project, sha=sha, ref=ref, variables=dict(variables))
    except rules.CiConfigError as exc:
        raise ApiError(400, {"base": [str(exc)]}) from exc
    if not jobs:
        raise ApiError(
            400,
            {
                "base": [
                    "Pipeline will not run for the selected trigger. The rules configuration "
                    "prevented any jobs from being added to the pipeline."
                ]
            },
        )
    iid = 1 + sum(1 for p in fake.pipelines.values() if p.project_id == project.id)
    pipeline = FakePipeline(fake.next_id("pipeline"), iid, project.id, ref, sha, dict(variables))
    pipeline.user_id = owner.id if owner is not None else None
    pipeline.jobs = [FakeJob(fake.next_id("job"), name, stage) for name, stage in jobs]
    fake.pipelines[pipeline.id] = pipeline
    return 201, pipeline_entity(fake, pipeline, detailed=True)


def _pipeline(fake: GitLabFake, req: Req, level: int = rules.REPORTER) -> FakePipeline:
    project = _project(fake, req, level)
    pipeline = fake.pipelines.get(_int(req.path["pipeline_id"], "Pipeline"))
    if pipeline is None or pipeline.project_id != project.id:
        raise ApiError(404, "404 Not found")
    return pipeline


def list_pipelines(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
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
    pipeline = _pipeline(fake, req, rules.DEVELOPER)
    if pipeline.status in ACTIVE:
        fake.set_pipeline_status(pipeline.id, "canceled")
    return pipeline_entity(fake, pipeline, detailed=True)


def delete_pipeline(fake: GitLabFake, req: Req) -> Any:
    del fake.pipelines[_pipeline(fake, req, rules.OWNER).id]
    return 204, None


def pipeline_jobs(fake: GitLabFake, req: Req) -> Any:
    pipeline = _pipeline(fake, req)
    return _paged(req, [job_entity(fake, pipeline, job) for job in pipeline.jobs])


def job_trace(fake: GitLabFake, req: Req) -> Any:
    project = _project(fake, req, rules.REPORTER)
    job_id = _int(req.path["job_id"], "Job")
    for pipeline in fake.pipelines.values():
        for job in pipeline.jobs:
            if job.id == job_id and pipeline.project_id == project.id:
                return PlainTextResponse(job.trace)
    raise ApiError(404, "404 Job Not Found")


# --- wiring ----------------------------------------------------------------------------------
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/groups/{id}", get_group),
    ("GET", "/groups/{id}/members/all/{user_id}", group_member_all),
    ("GET", "/application/settings", application_settings),
    ("GET", "/personal_access_tokens/self", token_self),
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
    ("GET", "/projects/{id}/members/all/{user_id}", project_member_all),
    ("GET", "/projects/{id}/access_tokens", list_access_tokens),
    ("GET", "/projects/{id}/protected_branches", list_protected_branches),
    ("GET", "/projects/{id}/protected_branches/{name:path}", get_protected_branch),
    ("GET", "/projects/{id}/triggers", list_triggers),
    ("POST", "/projects/{id}/triggers", create_trigger),
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
    ("POST", "/projects/{id}/hooks/{hook_id}/test/{trigger}", hook_test),
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
