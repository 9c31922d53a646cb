"""The one Harbor REST client. Cluster mode keeps every app image in one Harbor project; all that
Nakama asks of Harbor's REST API (project, robots, repositories, artifacts, tag retention) goes
through :class:`HarborClient`, so retries, error translation and keeping secrets out of messages
live in one place. Pushing and pulling images is the OCI distribution API, not this module."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import tenacity
from pydantic import SecretStr

from nakama.errors import Conflict, NotFound, PermanentError, TemporaryError, Unauthorized
from nakama.settings import HarborSettings

API = "/api/v2.0"
PAGE_SIZE = 100  # Harbor's maximum page_size
MAX_MESSAGE = 300  # characters of a response body kept in an error message
MAX_RETRY_AFTER_S = 120.0  # a Retry-After longer than this is not worth blocking a worker for
RETENTION_CRON = "0 0 0 * * *"  # Harbor's 6-field cron (with seconds): daily at midnight

# Project-scope "resource:action" accesses per robot kind. "pull" is what Flux's image scanning
# and kubelet need; "push" (the builder) may also prune builds and move tags.
ROBOT_ACCESS: Mapping[str, tuple[str, ...]] = {
    "pull": ("repository:pull", "artifact:list", "artifact:read", "tag:list"),
    "push": (
        *("repository:pull", "repository:push", "artifact:list", "artifact:read"),
        *("artifact:delete", "tag:list", "tag:create", "tag:delete"),
    ),
}
_STATUS_ERRORS = {401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict}
_AUTH_VALUE = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True)
class Robot:
    id: int
    name: str  # the full name Harbor logs in with, e.g. robot$nakama-apps+flux
    secret: SecretStr


@dataclass(frozen=True)
class Artifact:
    digest: str
    tags: tuple[str, ...]
    push_time: datetime | None
    labels: Mapping[str, str]  # the image config's labels (OCI), not Harbor's own label objects


class _Retryable(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def robot_file(name: str, secret: str) -> str:
    """A robot's name and secret as the content of a GitLab File variable: Harbor's own answer
    to a robot's creation (``{"name": "robot$…", "secret": "…"}``), with every ``$`` written as
    ``\\u0024``. GitLab expands ``$NAME`` in the values of variables (File variables too)
    unless they are marked raw, which would turn ``robot$nakama-apps+push`` into
    ``robot-apps+push``; JSON reads ``\\u0024`` back as ``$``."""
    text = json.dumps({"name": name, "secret": secret}, ensure_ascii=True)
    return text.replace("$", "\\u0024") + "\n"


def parse_robot_file(text: str) -> tuple[str | None, str] | None:
    """(name, secret) from a :func:`robot_file` (or Harbor's answer as it is), None if ``text``
    is not such a JSON object; a JSON object without a secret is a ValueError."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        raise ValueError("it starts with '{' but is not JSON") from None
    secret, name = data.get("secret"), data.get("name")
    if not isinstance(secret, str) or not secret:
        raise ValueError('it is JSON without a "secret" string')
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError('its "name" is not a string')
    return name, secret


def robot_request(*, project: str, name: str, access: Literal["pull", "push"]) -> dict[str, Any]:
    """A ``RobotCreate`` body for a project-level robot that never expires."""
    accesses = [
        dict(zip(("resource", "action"), a.split(":"), strict=True)) for a in ROBOT_ACCESS[access]
    ]
    permission = {"kind": "project", "namespace": project, "access": accesses}
    return {
        "name": name,
        "description": f"Nakama {access} robot",
        "level": "project",
        "duration": -1,
        "disable": False,
        "permissions": [permission],
    }


def retention_policy(*, project_id: int, keep: int) -> dict[str, Any]:
    """A ``RetentionPolicy`` keeping the ``keep`` most recently pushed artifacts per repository,
    untagged ones counted too, applied daily (examples/retention_policy.json's shape)."""
    every_repository = {"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}
    every_artifact = {**every_repository, "decoration": "matches", "extras": '{"untagged":true}'}
    rule = {
        "disabled": False,
        "action": "retain",
        "template": "latestPushedK",
        "params": {"latestPushedK": keep},
        "tag_selectors": [every_artifact],
        "scope_selectors": {"repository": [every_repository]},
    }
    trigger = {"kind": "Schedule", "settings": {"cron": RETENTION_CRON}, "references": {}}
    scope = {"level": "project", "ref": project_id}
    return {"algorithm": "or", "rules": [rule], "trigger": trigger, "scope": scope}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _wait(state: tenacity.RetryCallState) -> float:
    """Seconds before the next attempt: what a 429 asked for, else 0.5 s, 1 s, 2 s ... 30 s."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return exc.retry_after
    return tenacity.wait_exponential(multiplier=0.5, max=30)(state)


def _new_secret() -> str:
    # Harbor's rule for a given secret: 8-128 chars, at least one upper, one lower, one digit.
    while True:
        secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        if all(any(test(c) for c in secret) for test in (str.islower, str.isupper, str.isdigit)):
            return secret


def _artifact(item: Mapping[str, Any]) -> Artifact:
    try:
        pushed = datetime.fromisoformat(item["push_time"]) if item.get("push_time") else None
    except ValueError:
        pushed = None
    config = (item.get("extra_attrs") or {}).get("config") or {}
    return Artifact(
        digest=item["digest"],
        tags=tuple(tag["name"] for tag in item.get("tags") or ()),
        push_time=pushed,
        labels=dict(config.get("Labels") or {}),
    )


class HarborClient:
    """Harbor's REST API as Nakama uses it; one ``httpx.Client`` per instance."""

    def __init__(
        self,
        settings: HarborSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._project = settings.project
        self._robot_prefix = settings.robot_name_prefix
        self._max_attempts = settings.max_attempts
        self._sleep = sleep
        password = settings.password.get_secret_value() if settings.password else ""
        token = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
        self._secrets: set[str] = set()
        self._remember(password, token)
        self._http = httpx.Client(
            base_url=settings.url.rstrip("/") + API,
            auth=httpx.BasicAuth(settings.username, password),
            timeout=settings.timeout_s,
            verify=settings.verify_ssl,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def ensure_project(self) -> None:
        """Create the (private) project unless it exists."""
        body = {"project_name": self._project, "metadata": {"public": "false"}, "storage_limit": -1}
        with contextlib.suppress(Conflict):
            self._request("POST", "/projects", json=body)

    def ensure_robot(self, *, name: str, access: Literal["pull", "push"]) -> Robot | None:
        """Create a project robot; ``None`` if it exists already (Harbor never shows a secret
        again; :meth:`refresh_robot_secret` issues a new one)."""
        if self._find_robot(name) is not None:
            return None
        body = robot_request(project=self._project, name=name, access=access)
        try:
            created = self._request("POST", "/robots", json=body).json()
        except Conflict:  # a racing writer, or a retried POST whose first attempt landed
            return None
        self._remember(created["secret"])
        return Robot(id=created["id"], name=created["name"], secret=SecretStr(created["secret"]))

    def refresh_robot_secret(self, *, name: str) -> Robot:
        """Give the project robot ``name`` a new secret; the old one stops working."""
        robot = self._find_robot(name)
        if robot is None:
            raise NotFound(f"Harbor robot {name!r} not found in project {self._project!r}")
        # Our own secret, not Harbor's generated one: a retried PATCH then sets the same value.
        secret = _new_secret()
        self._remember(secret)
        self._request("PATCH", f"/robots/{int(robot['id'])}", json={"secret": secret})
        return Robot(id=robot["id"], name=robot["name"], secret=SecretStr(secret))

    def list_artifacts(self, repository: str) -> list[Artifact]:
        """Artifacts of ``repository`` (name without the project), newest push first; ``[]`` if
        the repository does not exist (Harbor creates it on the first push)."""
        query = {"with_tag": True, "sort": "-push_time"}
        try:
            items = list(self._paginate(self._repository(repository) + "/artifacts", query))
        except NotFound:
            return []
        return [_artifact(item) for item in items]

    def delete_repository(self, repository: str) -> None:
        """Delete ``repository`` and all its artifacts; a missing repository is fine."""
        with contextlib.suppress(NotFound):
            self._request("DELETE", self._repository(repository))

    def ensure_retention(self, *, keep: int) -> None:
        """Create or update the project's one tag-retention policy to keep ``keep`` builds."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        project = self._project_info()
        policy = retention_policy(project_id=project["project_id"], keep=keep)
        policy_id = (project.get("metadata") or {}).get("retention_id")
        if not policy_id:
            try:
                self._request("POST", "/retentions", json=policy)
                return
            except PermanentError:
                # 400: the project has a policy by now (a racer, or our retried POST landed).
                policy_id = (self._project_info().get("metadata") or {}).get("retention_id")
                if not policy_id:
                    raise
        self._request("PUT", f"/retentions/{int(policy_id)}", json={**policy, "id": int(policy_id)})

    def _repository(self, repository: str) -> str:
        name = quote(quote(repository, safe=""), safe="")  # Harbor's rule: a/b -> a%252Fb
        return f"/projects/{self._project}/repositories/{name}"

    def _project_info(self) -> Any:
        headers = {"X-Is-Resource-Name": "true"}  # the name is a name even if it looks numeric
        return self._request("GET", f"/projects/{self._project}", headers=headers).json()

    def robot_name(self, name: str) -> str:
        """The full name Harbor gives the project robot ``name``: its ``robot_name_prefix``
        (a system setting, ``robot$`` unless changed) + project + ``+`` + name."""
        return f"{self._robot_prefix}{self._project}+{name}"

    def _find_robot(self, name: str) -> dict[str, Any] | None:
        full_name = self.robot_name(name)
        query = {"q": f"Level=project,ProjectID={self._project_info()['project_id']}"}
        return next((r for r in self._paginate("/robots", query) if r["name"] == full_name), None)

    def _paginate(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        seen = 0
        for page in itertools.count(1):
            query = {**params, "page": page, "page_size": PAGE_SIZE}
            response = self._request("GET", path, params=query)
            batch: list[dict[str, Any]] = response.json()
            yield from batch
            seen += len(batch)
            total = response.headers.get("X-Total-Count")  # Harbor sends it and a Link header
            more = seen < int(total) if total else 'rel="next"' in response.headers.get("Link", "")
            if not batch or not more:
                return

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._max_attempts),
            wait=_wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._send, method, path, **kwargs)
        except _Retryable as exc:
            raise TemporaryError(f"{exc} (gave up after {self._max_attempts} attempts)") from exc

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        what = f"Harbor {method} {path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # connection errors, timeouts, broken responses
            raise _Retryable(f"{what}: {type(exc).__name__}: {self._redact(str(exc))}") from exc
        status = response.status_code
        if response.is_success:
            return response
        message = f"{what}: HTTP {status}: {self._redact(response.text)}"
        if status == 429 or status >= 500:
            raise _Retryable(message, retry_after=_retry_after(response.headers.get("Retry-After")))
        raise _STATUS_ERRORS.get(status, PermanentError)(message)

    def _remember(self, *secrets_: str) -> None:
        """Keep ``secrets_`` out of messages, also as a server may echo them (JSON, URL-encoded)."""
        for secret in filter(None, secrets_):
            self._secrets |= {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _AUTH_VALUE.sub(r"\1 ***", text)
        return text[:MAX_MESSAGE] + ("…" if len(text) > MAX_MESSAGE else "")
