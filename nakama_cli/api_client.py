"""The client of Nakama's own REST API v1, for the CLI: base URL and token, the saved login, and
HTTP errors translated into Nakama's errors. The token is sent as a header and never printed;
passwords go only into request bodies."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx

from nakama.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_FILE = "cli.json"


def config_path() -> Path:
    """``$NAKAMA_CONFIG_DIR/cli.json``, else ``~/.config/nakama/cli.json``."""
    base = os.environ.get("NAKAMA_CONFIG_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".config" / "nakama"
    return root / CONFIG_FILE


def load_saved() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    return {k: str(v) for k, v in data.items() if k in ("url", "token") and v}


def save_login(url: str, token: str) -> Path:
    """Write the login with mode 0600 (the directory 0700); returns the file's path."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """Explicit values first, then ``NAKAMA_URL`` / ``NAKAMA_TOKEN``, then the saved login."""
    saved = load_saved()
    final_url = url or os.environ.get("NAKAMA_URL") or saved.get("url") or DEFAULT_URL
    final_token = token or os.environ.get("NAKAMA_TOKEN") or saved.get("token")
    return final_url.rstrip("/"), final_token


def _detail(response: httpx.Response) -> str:
    """The server's message: ``detail`` as a string, or FastAPI's list of validation errors."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                msg = str(item.get("msg", "")).removeprefix("Value error, ")
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail) if detail is not None else response.reason_phrase


def _target(path: str) -> str:
    """What an API path names, for a refusal: ``the variables of project 'x'``."""
    parts = [unquote(p) for p in path.removeprefix("/api/v1").strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] in ("projects", "users"):
        owner = f"{parts[0][:-1]} {parts[1]!r}"
        return f"the {parts[2].replace('-', ' ')} of {owner}" if len(parts) > 2 else owner
    return f"the {parts[0]}" if parts else "this"


# Seconds a create that imports a repository may take to answer: the server's bound on an import
# (600 s, local mode's fetch and GitLab's import alike) and a minute for the rest.
IMPORT_WAIT_S = 660.0


def raise_for(response: httpx.Response) -> None:
    """Translate an error answer into Nakama's errors (each carries the server's message)."""
    status = response.status_code
    if status < 400:
        return
    message = _detail(response)
    if status == 401:
        raise Unauthorized(f"not authenticated ({status}): {message} (run `nakama login`)")
    if status == 403:
        # Signed in, but not allowed: the server says what is needed (a role, an admin). Not a
        # matter of logging in again.
        where = _target(response.request.url.path)
        raise Forbidden(f"you do not have access to {where}: {message}")
    if status == 404:
        raise NotFound(message)
    if status == 409:
        raise Conflict(message)
    if status < 500:
        raise InvalidInput(message)
    if status in (502, 503, 504):
        raise TemporaryError(f"server error {status}: {message}")
    raise PermanentError(f"server error {status}: {message}")


@dataclass
class NakamaClient:
    """A thin, synchronous client of ``/api/v1``; answers are the API's JSON shapes."""

    url: str
    token: str | None = field(repr=False)
    timeout: float = 30.0
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    @classmethod
    def from_config(cls, url: str | None = None, token: str | None = None) -> NakamaClient:
        final_url, final_token = resolve(url, token)
        return cls(final_url, final_token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NakamaClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self.token:
            raise Unauthorized("no token: run `nakama login` or set NAKAMA_TOKEN")
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.TimeoutException:
            raise TemporaryError(f"Nakama at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            raise TemporaryError(f"cannot reach Nakama at {self.url} ({reason})") from None
        raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise NakamaError(f"{method} {path}: the server's answer is not JSON") from None

    # --- projects ----------------------------------------------------------------------------
    def list_projects(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/projects"))

    def get_project(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/projects/{name}"))

    def create_project(
        self, name: str, maintainer: str | None = None, *, source: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create a project; with ``source`` (url, token, branch, main_file, python_version,
        username) by importing that repository."""
        body: dict[str, Any] = {"name": name}
        if maintainer:
            body["maintainer"] = maintainer
        if source is None:
            return dict(self._json("POST", "/projects", json=body))
        body["source"] = source
        # The server answers once the import is done (it gives up after 600 s).
        return dict(self._json("POST", "/projects", json=body, timeout=IMPORT_WAIT_S))

    def delete_project(self, name: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/projects/{name}"))

    def rollback(self, name: str, pipeline_id: int) -> dict[str, Any]:
        """Submit a rollback to ``pipeline_id``; the new pipeline."""
        body = {"pipeline_id": pipeline_id}
        return dict(self._json("POST", f"/projects/{name}/rollback", json=body))

    def rollback_targets(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/projects/{name}/rollback-targets"))

    def update_project(
        self, name: str, *, visibility: str | None = None, idle_timeout_s: int | None = None
    ) -> dict[str, Any]:
        """Change the fields given (``idle_timeout_s=0``: never sleep); the project after."""
        body: dict[str, Any] = {}
        if visibility is not None:
            body["visibility"] = visibility
        if idle_timeout_s is not None:
            body["idle_timeout_s"] = idle_timeout_s
        return dict(self._json("PATCH", f"/projects/{name}", json=body))

    def restart(self, name: str) -> dict[str, Any]:
        """Restart the project's app on what it runs now; the project after."""
        return dict(self._json("POST", f"/projects/{name}/restart"))

    # --- variables -----------------------------------------------------------------------------
    def variables(self, name: str) -> list[dict[str, Any]]:
        """The app's variables by key; a secret without its value."""
        return list(self._json("GET", f"/projects/{name}/variables"))

    def set_variable(self, name: str, key: str, value: str, *, secret: bool) -> dict[str, Any]:
        """Create or replace a variable (the value goes in the body only); the app restarts."""
        path = f"/projects/{name}/variables/{quote(key, safe='')}"
        return dict(self._json("PUT", path, json={"value": value, "secret": secret}))

    def delete_variable(self, name: str, key: str) -> None:
        self.request("DELETE", f"/projects/{name}/variables/{quote(key, safe='')}")

    # --- notifications -------------------------------------------------------------------------
    def notification_targets(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/projects/{name}/notifications"))

    def add_notification_target(
        self, name: str, *, kind: str, url: str, on_deploy: bool
    ) -> dict[str, Any]:
        """Add a target (the URL goes in the body only); the answer holds a webhook's secret."""
        body = {"kind": kind, "url": url, "on_deploy": on_deploy}
        return dict(self._json("POST", f"/projects/{name}/notifications", json=body))

    def remove_notification_target(self, name: str, target_id: int) -> None:
        self.request("DELETE", f"/projects/{name}/notifications/{target_id}")

    # --- database --------------------------------------------------------------------------------
    def database(self, name: str) -> dict[str, Any]:
        """Whether app databases are configured, and the project's database (or None)."""
        return dict(self._json("GET", f"/projects/{name}/database"))

    def create_database(self, name: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/projects/{name}/database"))

    def rotate_database(self, name: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/projects/{name}/database/rotate"))

    def delete_database(self, name: str) -> None:
        self.request("DELETE", f"/projects/{name}/database")

    # --- sharing -------------------------------------------------------------------------------
    def members(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/projects/{name}/members"))

    def set_member(self, name: str, username: str, role: str) -> dict[str, Any]:
        """Add ``username`` to the project with ``role``, or change their role."""
        path = f"/projects/{name}/members/{quote(username, safe='')}"
        return dict(self._json("PUT", path, json={"role": role}))

    def remove_member(self, name: str, username: str) -> None:
        self.request("DELETE", f"/projects/{name}/members/{quote(username, safe='')}")

    # --- limits --------------------------------------------------------------------------------
    def limits(self, name: str) -> dict[str, Any]:
        """The limits in force, the overrides among them, how enforced, $DATA_DIR's bytes."""
        return dict(self._json("GET", f"/projects/{name}/limits"))

    def set_limits(self, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Replace every override of the project's limits with ``overrides`` (admins)."""
        return dict(self._json("PUT", f"/projects/{name}/limits", json=overrides))

    def reset_limits(self, name: str) -> dict[str, Any]:
        """Drop every override: the default limits (admins)."""
        return dict(self._json("DELETE", f"/projects/{name}/limits"))

    # --- pipelines and logs --------------------------------------------------------------------
    def pipelines(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/projects/{name}/pipelines", params={"limit": limit}))

    def pipeline(self, name: str, pipeline_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/projects/{name}/pipelines/{pipeline_id}"))

    def pipeline_log(self, name: str, pipeline_id: int) -> str:
        return self.request("GET", f"/projects/{name}/pipelines/{pipeline_id}/log").text

    def app_logs(self, name: str, tail: int = 200) -> str:
        return self.request("GET", f"/projects/{name}/logs", params={"tail": tail}).text

    # --- users ---------------------------------------------------------------------------------
    def create_user(self, username: str, password: str | None = None) -> dict[str, Any]:
        """A new user and its first token (shown once)."""
        body: dict[str, str] = {"username": username}
        if password is not None:
            body["password"] = password
        return dict(self._json("POST", "/users", json=body))

    def list_users(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/users"))

    def new_token(self, username: str, name: str | None = None) -> dict[str, Any]:
        path = f"/users/{quote(username, safe='')}/tokens"
        if name is None:
            return dict(self._json("POST", path))
        return dict(self._json("POST", path, json={"name": name}))

    def list_tokens(self, username: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/users/{quote(username, safe='')}/tokens"))

    def revoke_token(self, username: str, token_id: int) -> None:
        self.request("DELETE", f"/users/{quote(username, safe='')}/tokens/{token_id}")

    def remove_user(self, username: str, projects: str | None = None) -> dict[str, Any]:
        params = {"projects": projects} if projects is not None else {}
        return dict(self._json("DELETE", f"/users/{quote(username, safe='')}", params=params))

    def set_password(self, username: str, password: str) -> None:
        path = f"/users/{quote(username, safe='')}/password"
        self.request("PUT", path, json={"password": password})
