"""The Harbor client against a stateful fake Harbor behind respx routes.

No Harbor server can run here, so respx routes drive the real httpx client inside ``HarborClient``
into a small fake that keeps projects, robots, repositories with artifacts and retention policies
in dicts. It answers in the shapes of the reference swagger.yaml (Harbor v2.15.2), applies the
handler rules listed in API_SUMMARY.md, and validates every request body against its swagger
definition, closed against unknown fields, so a misspelt key fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jsonschema
import pytest
import respx
from pydantic import SecretStr
from ruamel.yaml import YAML

from nakama.clients.harbor import Artifact, HarborClient, Robot, retention_policy, robot_request
from nakama.errors import NotFound, PermanentError, TemporaryError, Unauthorized
from nakama.settings import HarborSettings
from tests.conftest import REFERENCE

HARBOR = REFERENCE / "harbor"
URL = "https://harbor.test"
API = f"{URL}/api/v2.0"
USER = "admin"
# Characters that JSON-escape and URL-encode differently, so echoed variants can be checked too.
PASSWORD = 'Pa55/"w0rd&Secret'
PROJECT = "nakama-apps"
MAX_ATTEMPTS = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Harbor's rules (src/pkg/project/manager.go, src/common/rbac/const.go) as the fake applies them.
PROJECT_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
PROJECT_ACCESS = (
    {("repository", a) for a in ("pull", "push", "list", "read", "update", "delete")}
    | {("artifact", a) for a in ("read", "list", "create", "delete")}
    | {("tag", a) for a in ("list", "create", "delete")}
    | {("tag-retention", a) for a in ("read", "create", "update", "delete", "list")}
    | {("project", "read")}
)
RETENTION_TEMPLATES = {
    "latestPushedK",
    "latestPulledN",
    "nDaysSinceLastPush",
    "nDaysSinceLastPull",
    "latestActiveK",
    "lastXDays",
    "always",
    "nothing",
}


# --- reference material ---------------------------------------------------------------------


def example(name: str) -> Any:
    data = json.loads((HARBOR / "examples" / name).read_text())
    data.pop("_comment", None)
    return data


def _closed(node: Any) -> Any:
    """Swagger ``node`` as Harbor's go-swagger server reads it, closed against unknown keys.

    Every object that lists its properties is closed to other keys (stricter than Harbor, to catch
    misspelt fields). A bare ``type: object`` is go-swagger's ``interface{}``, any JSON value:
    ``RetentionRule.params`` holds ``{"latestPushedK": 10}``, ``Artifact.extra_attrs`` strings.
    """
    if isinstance(node, dict):
        if node.get("type") == "object" and not {"properties", "additionalProperties"} & set(node):
            return {}
        node = {key: _closed(value) for key, value in node.items()}
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(value) for value in node]
    return node


@cache
def _definitions() -> dict[str, Any]:
    swagger = YAML(typ="safe").load(HARBOR / "swagger.yaml")
    return _closed(swagger["definitions"])  # type: ignore[no-any-return]


@cache
def _validator(definition: str) -> jsonschema.Draft4Validator:
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _definitions()}
    return jsonschema.Draft4Validator(schema)


def validate(instance: Any, definition: str) -> None:
    """Swagger 2.0 schemas are JSON Schema draft 4 with ``$ref`` into ``definitions``."""
    _validator(definition).validate(instance)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def harbor_error(status: int, code: str, message: str) -> httpx.Response:
    body = {"errors": [{"code": code, "message": message}]}
    validate(body, "Errors")
    return httpx.Response(status, json=body)


# --- the fake -------------------------------------------------------------------------------

Fault = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class _Fault:
    when: str  # "before": instead of handling; "after": handled, then the answer is lost
    answer: Fault | type[httpx.TransportError]
    method: str | None
    path: str | None


class FakeHarbor:
    """Harbor's REST API for one admin user, kept in dicts. ``robot_prefix`` is Harbor's system
    setting ``robot_name_prefix`` (``robot$`` unless an admin changed it): a project robot's
    full name is ``<prefix><project>+<name>``."""

    def __init__(self, *, robot_prefix: str = "robot$") -> None:
        self.robot_prefix = robot_prefix
        self.projects: dict[str, dict[str, Any]] = {}
        self.robots: dict[int, dict[str, Any]] = {}
        self.robot_projects: dict[int, int] = {}
        self.robot_secrets: dict[int, str] = {}
        self.artifacts: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.retentions: dict[int, dict[str, Any]] = {}
        self.bodies: list[tuple[str, Any]] = []  # (swagger definition, validated request body)
        self.calls: list[tuple[str, str, int | str]] = []  # (method, raw path, status or error)
        self.requests: list[httpx.Request] = []
        self.send_total_count = True
        self._faults: list[_Fault] = []
        self._ids = itertools.count(1)

    def install(self, router: respx.MockRouter) -> None:
        project = r"(?P<project>[^/?]+)"
        repository = rf"/projects/{project}/repositories/(?P<repository>[^/?]+)"
        routes: list[tuple[str, str, Callable[..., httpx.Response]]] = [
            ("POST", "/projects", self.create_project),
            ("GET", f"/projects/{project}", self.get_project),
            ("GET", "/robots", self.list_robots),
            ("POST", "/robots", self.create_robot),
            ("PATCH", r"/robots/(?P<robot_id>\d+)", self.refresh_robot_secret),
            ("GET", f"{repository}/artifacts", self.list_artifacts),
            ("DELETE", repository, self.delete_repository),
            ("POST", "/retentions", self.create_retention),
            ("PUT", r"/retentions/(?P<policy_id>\d+)", self.update_retention),
        ]
        for method, path, handler in routes:
            pattern = rf"^{re.escape(API)}{path}(?:\?.*)?$"
            router.route(method=method, url__regex=pattern).mock(side_effect=self._serve(handler))

    def fail(
        self,
        answer: Fault | type[httpx.TransportError],
        *,
        times: int = 1,
        when: str = "before",
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``answer`` (or raise it)."""
        self._faults += [_Fault(when, answer, method, path) for _ in range(times)]

    def push(
        self, repository: str, *, tags: list[str], pushed: datetime, labels: dict[str, str]
    ) -> dict[str, Any]:
        """An image pushed to ``repository`` of our project (as the registry API would)."""
        artifact_id = next(self._ids)
        project_id = self.projects[PROJECT]["project_id"]
        artifact = {
            "id": artifact_id,
            "type": "IMAGE",
            "media_type": "application/vnd.oci.image.config.v1+json",
            "manifest_media_type": "application/vnd.oci.image.manifest.v1+json",
            "project_id": project_id,
            "repository_id": 1,
            "repository_name": f"{PROJECT}/{repository}",
            "digest": "sha256:"
            + hashlib.sha256(f"{repository}:{artifact_id}".encode()).hexdigest(),
            "size": 52_428_800,
            "push_time": iso(pushed),
            "pull_time": "0001-01-01T00:00:00.000Z",
            "extra_attrs": {"architecture": "amd64", "os": "linux", "config": {"Labels": labels}},
            "annotations": {},
            "references": [],
            "tags": [
                {
                    "id": next(self._ids),
                    "repository_id": 1,
                    "artifact_id": artifact_id,
                    "name": tag,
                    "push_time": iso(pushed),
                    "pull_time": "0001-01-01T00:00:00.000Z",
                    "immutable": False,
                }
                for tag in tags
            ],
        }
        validate(artifact, "Artifact")
        self.artifacts.setdefault((PROJECT, repository), []).append(artifact)
        return artifact

    # plumbing

    def _serve(self, handler: Callable[..., httpx.Response]) -> Callable[..., httpx.Response]:
        def serve(request: httpx.Request, **params: str) -> httpx.Response:
            raw_path = request.url.raw_path.decode().split("?")[0]
            self.requests.append(request)
            try:
                response = self._answer(handler, request, params)
            except httpx.TransportError as error:
                self.calls.append((request.method, raw_path, type(error).__name__))
                raise
            self.calls.append((request.method, raw_path, response.status_code))
            return response

        return serve

    def _answer(
        self, handler: Callable[..., httpx.Response], request: httpx.Request, params: dict[str, str]
    ) -> httpx.Response:
        fault = self._take_fault(request)
        if fault is not None and fault.when == "before":
            return self._fault_answer(fault, request)
        if request.headers.get("Authorization") != basic(USER, PASSWORD):
            return harbor_error(401, "UNAUTHORIZED", "unauthorized")
        response = handler(request, **params)
        if fault is not None:  # the work is done, but the answer never reaches the client
            return self._fault_answer(fault, request)
        return response

    def _take_fault(self, request: httpx.Request) -> _Fault | None:
        path = request.url.path.removeprefix("/api/v2.0")
        for index, fault in enumerate(self._faults):
            if fault.method in (None, request.method) and fault.path in (None, path):
                return self._faults.pop(index)
        return None

    @staticmethod
    def _fault_answer(fault: _Fault, request: httpx.Request) -> httpx.Response:
        answer = fault.answer
        if isinstance(answer, type):
            raise answer("simulated network failure", request=request)
        return answer(request) if callable(answer) else answer

    def _body(self, request: httpx.Request, definition: str) -> Any:
        assert request.headers["Content-Type"] == "application/json"
        body = json.loads(request.content)
        validate(body, definition)
        self.bodies.append((definition, body))
        return body

    def _page(self, request: httpx.Request, items: list[Any], definition: str) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        size = int(request.url.params.get("page_size", "10"))
        if size > 100 or page < 1:
            return harbor_error(400, "BAD_REQUEST", "page_size must be between 1 and 100")
        chunk = items[(page - 1) * size : page * size]
        for item in chunk:
            validate(item, definition)
        link = []
        base = request.url.copy_with(query=None)
        if page > 1:
            link.append(f'<{base.raw_path.decode()}?page={page - 1}&page_size={size}>; rel="prev"')
        if page * size < len(items):
            link.append(f'<{base.raw_path.decode()}?page={page + 1}&page_size={size}>; rel="next"')
        headers = {"Link": ", ".join(link)} if link else {}
        if self.send_total_count:
            headers["X-Total-Count"] = str(len(items))
        return httpx.Response(200, json=chunk, headers=headers)

    def _repository(self, project: str, raw: str) -> tuple[str, str] | None:
        once = unquote(raw)
        if "/" in once:  # Harbor's router decodes once: a single-encoded slash splits the path
            return None
        key = (unquote(project), unquote(once))
        return key if key in self.artifacts else None

    # handlers

    def create_project(self, request: httpx.Request) -> httpx.Response:
        body = self._body(request, "ProjectReq")
        name = body.get("project_name", "")
        if not PROJECT_NAME.match(name):
            return harbor_error(400, "BAD_REQUEST", f"project name {name!r} is not valid")
        if name in self.projects:
            return harbor_error(409, "CONFLICT", f"The project named {name} already exists")
        project_id = next(self._ids)
        now = iso(datetime.now(UTC))
        project = {
            "project_id": project_id,
            "name": name,
            "owner_id": 1,
            "owner_name": USER,
            "deleted": False,
            "repo_count": 0,
            "creation_time": now,
            "update_time": now,
            "metadata": {"public": "false", **(body.get("metadata") or {})},
        }
        validate(project, "Project")
        self.projects[name] = project
        return httpx.Response(201, headers={"Location": f"/api/v2.0/projects/{project_id}"})

    def get_project(self, request: httpx.Request, project: str) -> httpx.Response:
        name = unquote(project)
        by_name = request.headers.get("X-Is-Resource-Name") == "true" or not name.isdigit()
        found = next(
            (
                p
                for p in self.projects.values()
                if (p["name"] if by_name else str(p["project_id"])) == name
            ),
            None,
        )
        if found is None:
            return harbor_error(404, "NOT_FOUND", f"project {name} not found")
        return httpx.Response(200, json=found)

    def list_robots(self, request: httpx.Request) -> httpx.Response:
        query = dict(kv.split("=", 1) for kv in request.url.params.get("q", "").split(",") if kv)
        robots = [
            robot
            for robot_id, robot in self.robots.items()
            if robot["level"] == query.get("Level", robot["level"])
            and str(self.robot_projects[robot_id]) == query.get("ProjectID", "")
        ]
        return self._page(request, robots, "Robot")

    def create_robot(self, request: httpx.Request) -> httpx.Response:
        body = self._body(request, "RobotCreate")
        permissions = body.get("permissions") or []
        # src/server/v2.0/handler/robot.go: a project robot has exactly one permission, its
        # project's, with at least one access, each in the project scope's policy list.
        if body.get("level") != "project" or len(permissions) != 1:
            return harbor_error(400, "BAD_REQUEST", "bad request permission")
        permission = permissions[0]
        project = self.projects.get(permission.get("namespace", ""))
        if permission.get("kind") != "project" or project is None or not permission.get("access"):
            return harbor_error(400, "BAD_REQUEST", "bad request permission")
        for access in permission["access"]:
            if (access.get("resource"), access.get("action")) not in PROJECT_ACCESS:
                message = f"bad request permission: {access.get('resource')}:{access.get('action')}"
                return harbor_error(400, "BAD_REQUEST", message)
        if body.get("duration") != -1 and not body.get("duration", 0) > 0:
            return harbor_error(400, "BAD_REQUEST", "duration must be -1 or positive")
        full_name = f"{self.robot_prefix}{project['name']}+{body['name']}"
        if any(robot["name"] == full_name for robot in self.robots.values()):
            return harbor_error(409, "CONFLICT", f"robot account {full_name} already exists")
        robot_id = next(self._ids)
        secret = body.get("secret") or secrets.token_urlsafe(24)
        now = iso(datetime.now(UTC))
        self.robots[robot_id] = {
            "id": robot_id,
            "name": full_name,
            "description": body.get("description", ""),
            "level": "project",
            "duration": body["duration"],
            "disable": body.get("disable", False),
            "editable": True,
            "expires_at": -1,
            "permissions": body["permissions"],
            "creation_time": now,
            "update_time": now,
        }
        self.robot_projects[robot_id] = project["project_id"]
        self.robot_secrets[robot_id] = secret
        created = example("robot_created_response.json")
        created.update(id=robot_id, name=full_name, secret=secret, creation_time=now)
        validate(created, "RobotCreated")
        return httpx.Response(
            201, json=created, headers={"Location": f"/api/v2.0/robots/{robot_id}"}
        )

    def refresh_robot_secret(self, request: httpx.Request, robot_id: str) -> httpx.Response:
        body = self._body(request, "RobotSec")
        if int(robot_id) not in self.robots:
            return harbor_error(404, "NOT_FOUND", f"robot {robot_id} not found")
        secret = body.get("secret") or secrets.token_urlsafe(24)
        strong = all(
            any(test(c) for c in secret) for test in (str.islower, str.isupper, str.isdigit)
        )
        if body.get("secret") and not (8 <= len(secret) <= 128 and strong):
            return harbor_error(400, "BAD_REQUEST", "the secret must be longer than 8 chars ...")
        self.robot_secrets[int(robot_id)] = secret
        return httpx.Response(200, json={"secret": secret})

    def list_artifacts(
        self, request: httpx.Request, project: str, repository: str
    ) -> httpx.Response:
        key = self._repository(project, repository)
        if key is None:
            return harbor_error(404, "NOT_FOUND", f"repository {repository} not found")
        artifacts = [dict(artifact) for artifact in self.artifacts[key]]
        if request.url.params.get("sort") == "-push_time":
            artifacts.sort(key=lambda artifact: artifact["push_time"], reverse=True)
        if request.url.params.get("with_tag", "true") != "true":
            for artifact in artifacts:
                artifact.pop("tags")
        return self._page(request, artifacts, "Artifact")

    def delete_repository(
        self, request: httpx.Request, project: str, repository: str
    ) -> httpx.Response:
        key = self._repository(project, repository)
        if key is None:
            return harbor_error(404, "NOT_FOUND", f"repository {repository} not found")
        del self.artifacts[key]
        return httpx.Response(200)

    def _check_policy(self, policy: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        scope = policy.get("scope") or {}
        project = next(
            (p for p in self.projects.values() if p["project_id"] == scope.get("ref")), None
        )
        if scope.get("level") != "project" or project is None:
            return None, f"invalid Project id {scope.get('ref')}"
        for rule in policy.get("rules") or []:
            template = rule.get("template")
            if template not in RETENTION_TEMPLATES or rule.get("action") != "retain":
                return None, f"invalid rule {template}"
            if template not in (rule.get("params") or {}):
                return None, f"rule {template} needs its parameter"
        return project, ""

    def create_retention(self, request: httpx.Request) -> httpx.Response:
        policy = self._body(request, "RetentionPolicy")
        project, problem = self._check_policy(policy)
        if project is None:
            return harbor_error(400, "BAD_REQUEST", problem)
        if project["metadata"].get("retention_id"):
            message = f"project: {project['project_id']} already has retention policy"
            return harbor_error(400, "BAD_REQUEST", message)
        policy_id = next(self._ids)
        self.retentions[policy_id] = {**policy, "id": policy_id}
        project["metadata"]["retention_id"] = str(policy_id)
        return httpx.Response(201, headers={"Location": f"/api/v2.0/retentions/{policy_id}"})

    def update_retention(self, request: httpx.Request, policy_id: str) -> httpx.Response:
        policy = self._body(request, "RetentionPolicy")
        if int(policy_id) not in self.retentions:
            return harbor_error(404, "NOT_FOUND", f"retention {policy_id} not found")
        project, problem = self._check_policy(policy)
        if project is None or project["metadata"].get("retention_id") != policy_id:
            return harbor_error(400, "BAD_REQUEST", problem or "scope does not match the policy")
        self.retentions[int(policy_id)] = {**policy, "id": int(policy_id)}
        return httpx.Response(200)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def harbor() -> Iterator[FakeHarbor]:
    fake = FakeHarbor()
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(sleeps: list[float], *, password: str = PASSWORD, **settings: Any) -> HarborClient:
    values: dict[str, Any] = {
        "url": URL,
        "username": USER,
        "password": SecretStr(password),
        "project": PROJECT,
        "max_attempts": MAX_ATTEMPTS,
    }
    return HarborClient(HarborSettings(**(values | settings)), sleep=sleeps.append)


@pytest.fixture
def client(harbor: FakeHarbor, sleeps: list[float]) -> Iterator[HarborClient]:
    harbor_client = make_client(sleeps)
    yield harbor_client
    harbor_client.close()


def statuses(harbor: FakeHarbor, method: str | None = None) -> list[int | str]:
    return [status for m, _, status in harbor.calls if method in (None, m)]


def assert_no_secrets(error: BaseException, *secret_values: str) -> None:
    """Neither the message nor anything chained to it carries a secret in any usual spelling."""
    text = "".join(traceback.format_exception(error))
    for secret in secret_values:
        for spelling in (secret, json.dumps(secret)[1:-1], quote(secret, safe="")):
            assert spelling not in text
    assert not re.search(r"(?i)basic\s+[a-z0-9+/=]{8,}", text)


# --- the reference material itself ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "definition"),
    [
        ("project_create.json", "ProjectReq"),
        ("robot_create.json", "RobotCreate"),
        ("robot_created_response.json", "RobotCreated"),
        ("retention_policy.json", "RetentionPolicy"),
    ],
)
def test_reference_examples_validate_against_swagger(name: str, definition: str) -> None:
    validate(example(name), definition)


@pytest.mark.parametrize(
    ("body", "definition"),
    [
        ({"project_nam": PROJECT}, "ProjectReq"),  # a misspelt field
        ({"project_name": PROJECT, "metadata": {"public": False}}, "ProjectReq"),  # not a string
        ({"name": "ci", "permissions": [{"kind": "project", "acess": []}]}, "RobotCreate"),
        ({"rules": [{"template": "latestPushedK", "tag_selectors": {}}]}, "RetentionPolicy"),
    ],
)
def test_validator_rejects_bodies_harbor_would_not_understand(body: Any, definition: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(body, definition)


def test_pure_body_builders_validate() -> None:
    validate(robot_request(project=PROJECT, name="ci", access="pull"), "RobotCreate")
    validate(retention_policy(project_id=3, keep=10), "RetentionPolicy")


# --- projects -------------------------------------------------------------------------------


def test_ensure_project_twice_creates_it_once(client: HarborClient, harbor: FakeHarbor) -> None:
    client.ensure_project()
    client.ensure_project()

    assert statuses(harbor) == [201, 409]
    assert list(harbor.projects) == [PROJECT]
    assert harbor.projects[PROJECT]["metadata"]["public"] == "false"
    reference = example("project_create.json")
    for definition, body in harbor.bodies:
        assert definition == "ProjectReq"
        assert set(body) <= set(reference)
        assert set(body["metadata"]) <= set(reference["metadata"])


def test_a_name_harbor_rejects_is_a_permanent_error(
    harbor: FakeHarbor, sleeps: list[float]
) -> None:
    client = make_client(sleeps, project="Not_Valid")
    with closing(client), pytest.raises(PermanentError):
        client.ensure_project()
    assert statuses(harbor) == [400]


# --- robots ---------------------------------------------------------------------------------


def test_robots_for_push_and_pull_have_the_reference_permission_shape(
    client: HarborClient, harbor: FakeHarbor
) -> None:
    client.ensure_project()
    pusher = client.ensure_robot(name="builder", access="push")
    puller = client.ensure_robot(name="flux", access="pull")

    assert isinstance(pusher, Robot) and isinstance(puller, Robot)
    assert pusher.name == f"robot${PROJECT}+builder"
    assert puller.name == f"robot${PROJECT}+flux"
    assert pusher.secret.get_secret_value() == harbor.robot_secrets[pusher.id]
    assert puller.secret.get_secret_value() == harbor.robot_secrets[puller.id]
    assert harbor.robot_secrets[pusher.id] not in repr(pusher)

    reference = example("robot_create.json")
    push_body, pull_body = [body for d, body in harbor.bodies if d == "RobotCreate"]
    for body in (push_body, pull_body):
        assert set(body) == set(reference)
        assert {k: body[k] for k in ("level", "duration", "disable")} == {
            k: reference[k] for k in ("level", "duration", "disable")
        }
    # push: exactly the reference permission, for our project
    assert push_body["permissions"] == [{**reference["permissions"][0], "namespace": PROJECT}]
    # pull: the same single project permission, reading only
    (pull_permission,) = pull_body["permissions"]
    assert set(pull_permission) == {"kind", "namespace", "access"}
    assert (pull_permission["kind"], pull_permission["namespace"]) == ("project", PROJECT)
    pull_access = {(a["resource"], a["action"]) for a in pull_permission["access"]}
    reference_access = {(a["resource"], a["action"]) for a in reference["permissions"][0]["access"]}
    assert ("repository", "pull") in pull_access < reference_access
    assert not {action for _, action in pull_access} & {"push", "create", "delete"}


def test_an_existing_robot_is_left_alone_and_its_secret_can_be_refreshed(
    client: HarborClient, harbor: FakeHarbor
) -> None:
    client.ensure_project()
    created = client.ensure_robot(name="builder", access="push")
    assert created is not None

    assert client.ensure_robot(name="builder", access="push") is None
    assert statuses(harbor, "POST") == [201, 201]  # the project, then one robot

    refreshed = client.refresh_robot_secret(name="builder")
    assert (refreshed.id, refreshed.name) == (created.id, created.name)
    new_secret = refreshed.secret.get_secret_value()
    assert new_secret != created.secret.get_secret_value()
    assert harbor.robot_secrets[created.id] == new_secret
    assert [b for d, b in harbor.bodies if d == "RobotSec"] == [{"secret": new_secret}]

    with pytest.raises(NotFound):
        client.refresh_robot_secret(name="nobody")


def test_a_robot_created_whose_answer_was_lost_is_recovered_by_a_refresh(
    client: HarborClient, harbor: FakeHarbor, sleeps: list[float]
) -> None:
    client.ensure_project()
    harbor.fail(httpx.Response(502), when="after", method="POST", path="/robots")

    assert client.ensure_robot(name="builder", access="push") is None  # retried: 409
    assert statuses(harbor, "POST")[1:] == [502, 409]
    assert len(sleeps) == 1
    robot = client.refresh_robot_secret(name="builder")
    assert harbor.robot_secrets[robot.id] == robot.secret.get_secret_value()


def test_a_robot_needs_the_project(client: HarborClient) -> None:
    with pytest.raises(NotFound):
        client.ensure_robot(name="builder", access="push")


# --- artifacts and repositories -------------------------------------------------------------


@pytest.mark.parametrize("total_count", [True, False], ids=["X-Total-Count", "Link-only"])
def test_list_artifacts_follows_pages_with_tags(
    client: HarborClient, harbor: FakeHarbor, total_count: bool
) -> None:
    harbor.send_total_count = total_count
    client.ensure_project()
    for i in range(230):
        pushed = T0 + timedelta(minutes=i)
        tags = [f"main-{i:07x}-{pushed:%Y%m%d%H%M%S}"] + (["latest"] if i == 229 else [])
        harbor.push("demo", tags=tags if i % 10 else [], pushed=pushed, labels={"hash": f"h{i}"})

    artifacts = client.list_artifacts("demo")

    assert len(artifacts) == 230
    assert len({a.digest for a in artifacts}) == 230
    newest = harbor.artifacts[(PROJECT, "demo")][-1]
    assert artifacts[0] == Artifact(
        digest=newest["digest"],
        tags=(f"main-00000e5-{T0 + timedelta(minutes=229):%Y%m%d%H%M%S}", "latest"),
        push_time=T0 + timedelta(minutes=229),
        labels={"hash": "h229"},
    )
    assert artifacts[-1].tags == () and artifacts[-1].push_time == T0
    times = [a.push_time for a in artifacts]
    assert times == sorted(times, reverse=True)  # type: ignore[type-var]
    gets = [r.url.params for r in harbor.requests if r.url.path.endswith("/artifacts")]
    assert [params["page"] for params in gets] == ["1", "2", "3"]
    assert all(params["page_size"] == "100" and params["with_tag"] == "true" for params in gets)


def test_list_artifacts_of_a_repository_not_pushed_yet_is_empty(
    client: HarborClient, harbor: FakeHarbor
) -> None:
    client.ensure_project()
    assert client.list_artifacts("never-pushed") == []
    assert statuses(harbor, "GET") == [404]


def test_delete_repository_with_a_slash_twice(client: HarborClient, harbor: FakeHarbor) -> None:
    client.ensure_project()
    harbor.push("team/app", tags=["main-1"], pushed=T0, labels={})
    harbor.push("other", tags=["main-1"], pushed=T0, labels={})
    assert [a.tags for a in client.list_artifacts("team/app")] == [("main-1",)]

    client.delete_repository("team/app")
    client.delete_repository("team/app")

    assert list(harbor.artifacts) == [(PROJECT, "other")]
    deletes = [(path, status) for m, path, status in harbor.calls if m == "DELETE"]
    expected_path = f"/api/v2.0/projects/{PROJECT}/repositories/team%252Fapp"
    assert deletes == [(expected_path, 200), (expected_path, 404)]


# --- retention ------------------------------------------------------------------------------


def test_retention_is_created_then_updated(client: HarborClient, harbor: FakeHarbor) -> None:
    client.ensure_project()
    project_id = harbor.projects[PROJECT]["project_id"]

    client.ensure_retention(keep=10)
    (policy_id,) = harbor.retentions
    assert harbor.projects[PROJECT]["metadata"]["retention_id"] == str(policy_id)
    reference = example("retention_policy.json")
    reference["scope"]["ref"] = project_id
    assert [b for d, b in harbor.bodies if d == "RetentionPolicy"] == [reference]

    client.ensure_retention(keep=3)
    assert list(harbor.retentions) == [policy_id]
    (rule,) = harbor.retentions[policy_id]["rules"]
    assert (rule["template"], rule["params"]) == ("latestPushedK", {"latestPushedK": 3})
    writes = [(m, p, s) for m, p, s in harbor.calls if m in ("POST", "PUT")][1:]
    assert writes == [
        ("POST", "/api/v2.0/retentions", 201),
        ("PUT", f"/api/v2.0/retentions/{policy_id}", 200),
    ]


def test_a_retention_created_whose_answer_was_lost_is_updated(
    client: HarborClient, harbor: FakeHarbor
) -> None:
    client.ensure_project()
    harbor.fail(httpx.Response(504), when="after", method="POST", path="/retentions")

    client.ensure_retention(keep=7)

    assert statuses(harbor, "POST")[1:] == [504, 400]
    assert statuses(harbor, "PUT") == [200]
    (policy,) = harbor.retentions.values()
    assert policy["rules"][0]["params"] == {"latestPushedK": 7}


# --- retries and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("7", 7.0),
        ("http-date", 60.0),
        ("86400", 120.0),  # capped: a worker is not parked for a day
    ],
    ids=["seconds", "http-date", "capped"],
)
def test_429_waits_as_told_then_succeeds(
    client: HarborClient, harbor: FakeHarbor, sleeps: list[float], retry_after: str, expected: float
) -> None:
    if retry_after == "http-date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    harbor.fail(httpx.Response(429, headers={"Retry-After": retry_after}))

    client.ensure_project()

    assert statuses(harbor) == [429, 201]
    assert sleeps == [pytest.approx(expected, abs=2.0)]
    assert PROJECT in harbor.projects


def test_503_every_time_gives_up_after_max_attempts(
    client: HarborClient, harbor: FakeHarbor, sleeps: list[float]
) -> None:
    harbor.fail(harbor_error(503, "UNAVAILABLE", "maintenance"), times=MAX_ATTEMPTS + 1)

    with pytest.raises(TemporaryError, match="HTTP 503") as caught:
        client.ensure_project()

    assert statuses(harbor) == [503] * MAX_ATTEMPTS
    assert sleeps == [0.5, 1.0, 2.0]  # exponential back-off between the attempts
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
def test_network_errors_are_retried_then_temporary(
    client: HarborClient, harbor: FakeHarbor, sleeps: list[float], error: type[httpx.TransportError]
) -> None:
    harbor.fail(error, times=MAX_ATTEMPTS)

    with pytest.raises(TemporaryError, match=error.__name__) as caught:
        client.ensure_project()

    assert statuses(harbor) == [error.__name__] * MAX_ATTEMPTS
    assert isinstance(caught.value.__cause__.__cause__, error)  # type: ignore[union-attr]


def test_one_network_error_is_retried_away(
    client: HarborClient, harbor: FakeHarbor, sleeps: list[float]
) -> None:
    harbor.fail(httpx.ConnectError)
    client.ensure_project()
    assert statuses(harbor) == ["ConnectError", 201]


def test_wrong_password_is_unauthorized_at_once(harbor: FakeHarbor, sleeps: list[float]) -> None:
    client = make_client(sleeps, password="not-the-password")
    with closing(client), pytest.raises(Unauthorized) as caught:
        client.ensure_project()
    assert statuses(harbor) == [401]
    assert sleeps == []
    assert_no_secrets(caught.value, "not-the-password")


def _echo(request: httpx.Request, *extra: str) -> httpx.Response:
    auth = request.headers["Authorization"]
    echoed = "; ".join([f"Authorization: {auth}", f"body: {request.content.decode()}", *extra])
    message = f"upstream failed for user {USER} password={PASSWORD} ({echoed}) " + "x" * 2000
    return httpx.Response(500, json={"errors": [{"code": "INTERNAL", "message": message}]})


def test_a_500_echoing_credentials_does_not_leak_them(
    client: HarborClient, harbor: FakeHarbor
) -> None:
    harbor.fail(_echo, times=MAX_ATTEMPTS)

    with pytest.raises(TemporaryError) as caught:
        client.ensure_project()

    assert_no_secrets(caught.value, PASSWORD, basic(USER, PASSWORD).split()[1])
    assert "***" in str(caught.value)
    assert len(str(caught.value)) < 450  # the body is cut to 300 characters


def test_errors_do_not_leak_robot_secrets(client: HarborClient, harbor: FakeHarbor) -> None:
    client.ensure_project()
    robot = client.ensure_robot(name="builder", access="push")
    assert robot is not None
    secret = robot.secret.get_secret_value()
    harbor.fail(lambda request: _echo(request, f"robot secret {secret}"), times=MAX_ATTEMPTS)
    with pytest.raises(TemporaryError) as caught:
        client.list_artifacts("demo")
    assert_no_secrets(caught.value, secret, PASSWORD)

    refreshed = client.refresh_robot_secret(name="builder").secret.get_secret_value()
    bad_request = f"secret {refreshed} is not valid"
    harbor.fail(lambda request: harbor_error(400, "BAD_REQUEST", bad_request))
    with pytest.raises(PermanentError) as rejected:
        client.list_artifacts("demo")
    assert_no_secrets(rejected.value, refreshed, secret, PASSWORD)


# --- settings reach the HTTP client ---------------------------------------------------------


def test_transport_timeout_and_auth_come_from_settings(sleeps: list[float]) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201)

    settings = HarborSettings(
        url=URL + "/", password=SecretStr(PASSWORD), project=PROJECT, timeout_s=2.5
    )
    client = HarborClient(settings, transport=httpx.MockTransport(answer), sleep=sleeps.append)
    client.ensure_project()
    client.close()

    (request,) = seen
    assert str(request.url) == f"{API}/projects"
    assert request.headers["Authorization"] == basic("admin", PASSWORD)
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


def test_a_whole_setup_sends_only_valid_bodies(client: HarborClient, harbor: FakeHarbor) -> None:
    client.ensure_project()
    client.ensure_robot(name="builder", access="push")
    client.ensure_robot(name="flux", access="pull")
    client.refresh_robot_secret(name="flux")
    client.ensure_retention(keep=10)
    client.ensure_retention(keep=5)

    writes = [c for c in harbor.calls if c[0] in ("POST", "PUT", "PATCH")]
    assert len(harbor.bodies) == len(writes) == 6
    definitions = {d for d, _ in harbor.bodies}
    assert definitions == {"ProjectReq", "RobotCreate", "RobotSec", "RetentionPolicy"}


@pytest.mark.parametrize("prefix", ["robot_", "svc-"])
def test_a_non_default_robot_prefix_is_taken_from_the_settings(
    prefix: str, sleeps: list[float]
) -> None:
    """Harbor's robot_name_prefix is a system setting; the client must find its robots by it."""
    fake = FakeHarbor(robot_prefix=prefix)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        client = make_client(sleeps, robot_name_prefix=prefix)
        client.ensure_project()
        created = client.ensure_robot(name="builder", access="push")
        assert created is not None and created.name == f"{prefix}{PROJECT}+builder"
        assert client.robot_name("builder") == created.name
        assert client.ensure_robot(name="builder", access="push") is None  # found, not re-made
        assert statuses(fake, "POST") == [201, 201]
        refreshed = client.refresh_robot_secret(name="builder")
        assert refreshed.id == created.id
        assert fake.robot_secrets[created.id] == refreshed.secret.get_secret_value()
        # With Harbor's default assumed instead, the robot is not found.
        wrong = make_client(sleeps)
        with pytest.raises(NotFound, match="builder"):
            wrong.refresh_robot_secret(name="builder")
