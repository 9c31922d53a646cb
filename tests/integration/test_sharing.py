"""Sharing against a real ``nakama up``: every route that names a project (REST API, pages and
forms, the log stream, git over HTTP) answers each kind of caller as the roles say, and a refused
change changes nothing.

alice owns project ``sharing-p``; carol is a developer there (the member that member changes
act on); bob is the caller whose role each case sets: no member, viewer or developer. A caller
who is not a member gets 404, as for a missing project; a member whose role is too low gets 403
naming the role needed; an admin is owner of everything."""

from __future__ import annotations

import html
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from nakama.access import Role
from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    clone,
    git,
    git_push,
    running,
    set_version,
    wait_for,
    write_tiny_kit,
)
from tests.integration.test_users import client, git_clone, make_user
from tests.integration.test_web_security import Browser
from tests.support import sse_events

P = "sharing-p"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-3"}
FINISHED = {"success", "failed", "canceled", "superseded"}
# Who calls, by the role they have in the project (bob plays the three members' parts).
CALLERS = ("non-member", "viewer", "developer", "owner", "admin")


# --- the server and its users ----------------------------------------------------------------
@dataclass
class World:
    """The running server, a session and an API client per user, and the project's fixed parts."""

    server: NakamaProcess
    tokens: dict[str, str]
    browsers: dict[str, Browser]
    apis: dict[str, httpx.Client]
    first_pipeline: int = 0
    _victims: Iterator[int] = field(default_factory=lambda: count(1))
    _victim: str | None = None

    @property
    def admin(self) -> httpx.Client:
        return self.server.api

    def victim(self) -> str:
        """A project of alice's to delete (a new one once the last is gone)."""
        if self._victim is None:
            name = f"victim-{next(self._victims)}"
            r = self.apis["alice"].post("/api/v1/projects", json={"name": name})
            assert r.status_code == 201, r.text
            settle(self, name)
            self._victim = name
        return self._victim

    def victim_deleted(self) -> None:
        self._victim = None

    def rollback_target(self) -> int:
        targets = self.admin.get(f"/api/v1/projects/{P}/rollback-targets").json()
        assert targets, "no pipeline to roll back to"
        return int(targets[0]["id"])


def settle(world: World, name: str = P) -> None:
    """Wait until no pipeline of ``name`` runs and its app is up."""

    def settled() -> bool:
        project = world.server.project(name)
        busy = [p for p in world.server.pipelines(name) if p["status"] not in FINISHED]
        return not busy and project["status"] == "running" and project["app_state"] == "running"

    wait_for(settled, timeout=120, interval=0.1, what=f"{name} to settle")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sharing")
    kit = write_tiny_kit(root / "kit")
    with running(root / "data", starter_kit=kit, uv_cache=root / "uv-cache") as server:
        tokens = {name: make_user(server, name, pw) for name, pw in PASSWORDS.items()}
        tokens["admin"] = ADMIN_TOKEN
        browsers = {name: Browser(server) for name in tokens}
        for name, browser in browsers.items():
            password = ADMIN_TOKEN if name == "admin" else PASSWORDS[name]
            assert browser.sign_in(name, password).status_code == 303
        apis = {name: client(server, token) for name, token in tokens.items()}
        world = World(server=server, tokens=tokens, browsers=browsers, apis=apis)
        try:
            make_project(world, root)
            yield world
        finally:
            for http in (*apis.values(), *(b.http for b in browsers.values())):
                http.close()


def make_project(world: World, root: Path) -> None:
    """alice's project: two deployed commits (so there is always one to roll back to), a
    variable, and carol as a developer."""
    created = world.apis["alice"].post("/api/v1/projects", json={"name": P})
    assert created.status_code == 201, created.text
    [first] = world.server.pipelines(P)
    world.server.wait_deployed(P, first["commit"])
    world.first_pipeline = int(first["id"])
    work = clone(world.server, P, root / "work")
    set_version(work, "v2")
    git("commit", "-qam", "v2", cwd=work)
    git_push(work)
    world.server.wait_deployed(P, git("rev-parse", "HEAD", cwd=work))
    put_variable(world, "GREETING", "hello")
    set_role(world, P, "carol", "developer")
    settle(world)


def put_variable(world: World, key: str, value: str) -> None:
    r = world.admin.put(f"/api/v1/projects/{P}/variables/{key}", json={"value": value})
    assert r.status_code == 200, r.text


def set_role(world: World, project: str, username: str, role: str | None) -> None:
    """Give ``username`` ``role`` in ``project`` (None: not a member), as the admin."""
    path = f"/api/v1/projects/{project}/members/{username}"
    if role is None:
        r = world.admin.delete(path)
        assert r.status_code in (204, 404), r.text
    else:
        r = world.admin.put(path, json={"role": role})
        assert r.status_code == 200, r.text


def members(world: World, project: str = P) -> dict[str, str]:
    r = world.admin.get(f"/api/v1/projects/{project}/members")
    assert r.status_code == 200, r.text
    return {m["username"]: m["role"] for m in r.json()}


def state(world: World, name: str) -> dict[str, Any]:
    """Everything a request to project ``name`` could change, as the admin reads it."""
    api = world.admin
    project = api.get(f"/api/v1/projects/{name}").json()
    refs = world.server.data_dir / "git" / f"{name}.git"
    return {
        "project": {
            k: project[k]
            for k in ("status", "visibility", "idle_timeout_s", "deployed_commit", "updated_at")
        },
        "members": api.get(f"/api/v1/projects/{name}/members").json(),
        "variables": api.get(f"/api/v1/projects/{name}/variables").json(),
        "limits": api.get(f"/api/v1/projects/{name}/limits").json()["overrides"],
        "pipelines": [(p["id"], p["status"]) for p in world.server.pipelines(name)],
        "refs": git("for-each-ref", cwd=refs),
    }


def _limits_set(world: World, before: dict[str, Any]) -> None:
    limits = world.admin.get(f"/api/v1/projects/{P}/limits").json()
    assert limits["overrides"] == {"memory_mib": 768}
    assert limits["limits"]["memory_mib"] == 768


def _limits_default(world: World, before: dict[str, Any]) -> None:
    assert world.admin.get(f"/api/v1/projects/{P}/limits").json()["overrides"] == {}


def _limits_reset(world: World) -> None:
    assert world.admin.delete(f"/api/v1/projects/{P}/limits").status_code == 200
    settle(world)


# --- the table: every route that names a project ---------------------------------------------
Effect = Callable[[World, dict[str, Any]], None]


@dataclass(frozen=True)
class Case:
    """One route: how to call it, the least role it needs, and, where it changes something,
    how to see that it did (given the state before) and how to undo it."""

    surface: str  # api (bearer token), page (browser session), stream, git (HTTP Basic)
    method: str
    route: str  # the path as the router declares it
    needs: Role
    ok: int
    body: Callable[[World], dict[str, Any]] | None = None
    query: str = ""
    effect: Effect | None = None
    undo: Callable[[World], None] | None = None
    on_victim: bool = False  # acts on a throw-away project (delete)
    admin_only: bool = False  # no role is enough: only an admin (the project's limits)

    @property
    def id(self) -> str:
        tail = f"?{self.query}" if self.query else ""
        return f"{self.surface}:{self.method} {self.route}{tail}"


def _visibility_public(world: World, _before: dict[str, Any]) -> None:
    assert world.server.project(P)["visibility"] == "public"


def _patched(world: World, _before: dict[str, Any]) -> None:
    project = world.server.project(P)
    assert (project["visibility"], project["idle_timeout_s"]) == ("public", 600)


def _sleeps_after_10_min(world: World, _before: dict[str, Any]) -> None:
    assert world.server.project(P)["idle_timeout_s"] == 600


def _reset_project(world: World) -> None:
    r = world.admin.patch(
        f"/api/v1/projects/{P}", json={"visibility": "private", "idle_timeout_s": 0}
    )
    assert r.status_code == 200, r.text


def _carol_viewer(world: World, _before: dict[str, Any]) -> None:
    assert members(world)["carol"] == "viewer"


def _carol_gone(world: World, _before: dict[str, Any]) -> None:
    assert "carol" not in members(world)


def _carol_back(world: World) -> None:
    set_role(world, P, "carol", "developer")


def _extra_set(world: World, _before: dict[str, Any]) -> None:
    keys = [v["key"] for v in world.admin.get(f"/api/v1/projects/{P}/variables").json()]
    assert "EXTRA" in keys, keys


def _extra_removed(world: World) -> None:
    assert world.admin.delete(f"/api/v1/projects/{P}/variables/EXTRA").status_code == 204
    settle(world)


def _greeting_gone(world: World, _before: dict[str, Any]) -> None:
    keys = [v["key"] for v in world.admin.get(f"/api/v1/projects/{P}/variables").json()]
    assert "GREETING" not in keys, keys


def _greeting_back(world: World) -> None:
    put_variable(world, "GREETING", "hello")
    settle(world)


def _rolled_back(world: World, before: dict[str, Any]) -> None:
    newest = world.server.pipelines(P)[0]
    assert newest["id"] > before["pipelines"][0][0]
    assert newest["reason"].startswith("rollback to pipeline #"), newest


def _victim_deleted(world: World, _before: dict[str, Any]) -> None:
    name = world.victim()
    r = world.admin.get(f"/api/v1/projects/{name}")
    assert r.status_code == 404 or r.json()["status"] == "deleting", r.text
    world.victim_deleted()


def _rollback_body(world: World) -> dict[str, Any]:
    return {"pipeline_id": world.rollback_target()}


def _const(body: dict[str, Any]) -> Callable[[World], dict[str, Any]]:
    return lambda _world: body


API, PAGE = "/api/v1/projects/{name}", "/projects/{name}"
GIT = "/git/{project}.git/{rest:path}"
viewer, developer, owner = Role.viewer, Role.developer, Role.owner
CASES = (
    # REST API (backend/api.py)
    Case("api", "GET", API, viewer, 200),
    Case(
        "api",
        "PATCH",
        API,
        owner,
        200,
        body=_const({"visibility": "public", "idle_timeout_s": 600}),
        effect=_patched,
        undo=_reset_project,
    ),
    Case("api", "DELETE", API, owner, 202, effect=_victim_deleted, on_victim=True),
    Case("api", "GET", API + "/members", viewer, 200),
    Case(
        "api",
        "PUT",
        API + "/members/{username}",
        owner,
        200,
        body=_const({"role": "viewer"}),
        effect=_carol_viewer,
        undo=_carol_back,
    ),
    Case(
        "api",
        "DELETE",
        API + "/members/{username}",
        owner,
        204,
        effect=_carol_gone,
        undo=_carol_back,
    ),
    Case("api", "GET", API + "/pipelines", developer, 200),
    Case("api", "GET", API + "/pipelines/{pipeline_id}", developer, 200),
    Case("api", "GET", API + "/pipelines/{pipeline_id}/log", developer, 200),
    Case("api", "GET", API + "/logs", developer, 200),
    Case("api", "POST", API + "/restart", developer, 200),
    Case(
        "api",
        "POST",
        API + "/rollback",
        developer,
        202,
        body=_rollback_body,
        effect=_rolled_back,
        undo=settle,
    ),
    Case("api", "GET", API + "/rollback-targets", developer, 200),
    Case("api", "GET", API + "/variables", developer, 200),
    Case(
        "api",
        "PUT",
        API + "/variables/{key}",
        developer,
        200,
        body=_const({"value": "1"}),
        effect=_extra_set,
        undo=_extra_removed,
    ),
    Case(
        "api",
        "DELETE",
        API + "/variables/{key}",
        developer,
        204,
        effect=_greeting_gone,
        undo=_greeting_back,
    ),
    Case("api", "GET", API + "/limits", developer, 200),
    Case(
        "api",
        "PUT",
        API + "/limits",
        owner,
        200,
        body=_const({"memory_mib": 768}),
        effect=_limits_set,
        undo=_limits_reset,
        admin_only=True,
    ),
    Case(
        "api",
        "DELETE",
        API + "/limits",
        owner,
        200,
        effect=_limits_default,
        undo=_limits_reset,
        admin_only=True,
    ),
    # pages and forms (backend/web/pages.py)
    Case("page", "GET", PAGE, viewer, 200),
    Case("page", "GET", PAGE + "/live", developer, 200),
    Case("page", "GET", PAGE + "/app-log", developer, 200),
    Case("page", "GET", PAGE + "/pipelines/{pipeline_id}", developer, 200),
    Case(
        "page",
        "POST",
        PAGE + "/rollback",
        developer,
        303,
        body=_rollback_body,
        effect=_rolled_back,
        undo=settle,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/variables",
        developer,
        303,
        body=_const({"key": "EXTRA", "value": "1"}),
        effect=_extra_set,
        undo=_extra_removed,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/variables/{key}/delete",
        developer,
        303,
        body=_const({}),
        effect=_greeting_gone,
        undo=_greeting_back,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/sharing/visibility",
        owner,
        303,
        body=_const({"visibility": "public"}),
        effect=_visibility_public,
        undo=_reset_project,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/sharing/members",
        owner,
        303,
        body=_const({"username": "carol", "role": "viewer"}),
        effect=_carol_viewer,
        undo=_carol_back,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/sharing/members/{username}/delete",
        owner,
        303,
        body=_const({}),
        effect=_carol_gone,
        undo=_carol_back,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/sharing/sleep",
        owner,
        303,
        body=_const({"idle_minutes": "10"}),
        effect=_sleeps_after_10_min,
        undo=_reset_project,
    ),
    Case("page", "GET", PAGE + "/delete", owner, 200),
    Case(
        "page",
        "POST",
        PAGE + "/delete",
        owner,
        303,
        body=lambda world: {"confirm": world.victim()},
        effect=_victim_deleted,
        on_victim=True,
    ),
    Case(
        "page",
        "POST",
        PAGE + "/limits",
        owner,
        303,
        body=_const({"memory_mib": "768", "cpu": "", "processes": "", "disk_mib": ""}),
        effect=_limits_set,
        undo=_limits_reset,
        admin_only=True,
    ),
    # the log stream (backend/web/streams.py)
    Case("stream", "GET", PAGE + "/pipelines/{pipeline_id}/log/events", developer, 200),
    # git over HTTP: where clone and push are authorized (the real git test does both through)
    Case("git", "GET", GIT, developer, 200, query="service=git-upload-pack"),
    Case("git", "GET", GIT, developer, 200, query="service=git-receive-pack"),
)


def fill(route: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], route)


def call(world: World, case: Case, who: str, project: str) -> httpx.Response:
    """Make ``case``'s request to ``project`` as the caller ``who`` stands for."""
    user = {"owner": "alice", "admin": "admin"}.get(who, "bob")
    key = "EXTRA" if case.method == "PUT" or case.route.endswith("/variables") else "GREETING"
    path = fill(
        case.route,
        {
            "name": project,
            "project": project,
            "pipeline_id": str(world.first_pipeline),
            "key": key,
            "username": "carol",
            "rest": "info/refs",
        },
    )
    if case.query:
        path += f"?{case.query}"
    body = case.body(world) if case.body is not None else None
    if case.surface == "api":
        return world.apis[user].request(case.method, path, json=body)
    if case.surface == "git":
        return httpx.get(world.server.url + path, auth=(user, world.tokens[user]), timeout=30)
    browser = world.browsers[user]
    if case.surface == "stream":
        with browser.http.stream("GET", path, timeout=60) as response:
            if response.status_code != 200:
                response.read()
                return response
            events = [e for e, _ in sse_events(response)]
        assert events and events[-1]["event"] == "end", events
        return response
    if case.method == "POST":
        return browser.post(path, body or {})
    return browser.http.get(path)


def text_of(response: httpx.Response) -> str:
    """The body, for a message; a stream that was followed to its end has none left."""
    try:
        return response.text
    except httpx.ResponseNotRead:
        return ""


def expected_status(case: Case, who: str) -> int:
    if who == "non-member":
        return 404
    if case.admin_only:
        return case.ok if who == "admin" else 403
    role = Role.owner if who in ("owner", "admin") else Role[who]
    return case.ok if role >= case.needs else 403


MATRIX = [
    pytest.param(
        case,
        who,
        id=f"{case.id}-{who}",
    )
    for case in CASES
    for who in CALLERS
]


@pytest.mark.parametrize(("case", "who"), MATRIX)
def test_each_route_answers_each_caller_by_role(world: World, case: Case, who: str) -> None:
    project = world.victim() if case.on_victim else P
    set_role(world, project, "bob", who if who in ("viewer", "developer") else None)
    before = state(world, project)

    r = call(world, case, who, project)

    expected = expected_status(case, who)
    assert r.status_code == expected, (r.status_code, text_of(r)[:300])
    if expected in (403, 404):
        said = html.unescape(r.text)
        if expected == 404:  # as for a project that does not exist
            thing = "repository" if case.surface == "git" else "project"
            assert f"{thing} {project!r} not found" in said, said[:300]
        elif case.admin_only:
            assert "only an admin may do this" in said, said[:300]
        else:
            needs = f"your role in project {project!r} is {who}; this needs {case.needs.name}"
            assert f"{needs} or higher" in said, said[:300]
        assert "GREETING" not in said and "hello" not in said
        assert state(world, project) == before, "a refused request changed something"
        return
    if case.effect is not None:
        case.effect(world, before)
    if case.undo is not None:
        case.undo(world)


def test_the_table_has_every_route_that_names_a_project(tmp_path: Path) -> None:
    """The table above lists every route of the API, the pages, the log stream and git that
    takes a project, so that a new one cannot slip in without its role check being tested."""
    from fastapi import FastAPI
    from starlette.routing import Route

    from backend.api import make_api_router
    from backend.app import build_platform
    from backend.users import UserRemoval
    from backend.web.pages import make_pages_router
    from backend.web.streams import make_stream_router
    from backend.web.views import Renderer, make_templates
    from nakama.auth import Principal
    from nakama.sessions import SessionStore
    from nakama.settings import Settings

    platform = build_platform(
        Settings(data_dir=tmp_path / "data", starter_kit_dir=write_tiny_kit(tmp_path / "kit"))
    )
    try:

        def nobody(_request: object) -> Principal:
            raise AssertionError("not called")

        async def no_csrf(_request: object) -> None:
            raise AssertionError("not called")

        projects, variables = platform.projects, platform.variables
        sessions = SessionStore(platform.db, platform.tokens, max_age_s=60)
        api = FastAPI()
        api.include_router(
            make_api_router(
                projects=projects,
                tokens=platform.tokens,
                variables=variables,
                limits=platform.limits,
                sessions=sessions,
                users=UserRemoval(
                    db=platform.db,
                    tokens=platform.tokens,
                    sessions=sessions,
                    projects=projects,
                ),
            )
        )
        # The API nests routers, so its routes are read from its schema (where all of it is).
        declared = {
            (method.upper(), path)
            for path, operations in api.openapi()["paths"].items()
            for method in operations
        }
        # The others are hidden from the schema, and flat.
        for router in (
            make_pages_router(
                projects=projects,
                variables=variables,
                limits=platform.limits,
                isolation=platform.isolation,
                render=Renderer(make_templates(), mode="local", poll_s=2),
                user=nobody,
                csrf=no_csrf,
                maintainer_of=lambda _user: None,
            ),
            make_stream_router(projects=projects, user=nobody, interval_s=1),
            *platform.parts.routers(platform.tokens, projects.sharing),
        ):
            for route in router.routes:
                assert isinstance(route, Route), route  # not a nested router, to be read too
                declared |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    finally:
        platform.db.dispose()
    declared = {(m, path) for m, path in declared if re.search(r"\{(name|project)\}", path)}
    tested = {(c.method, c.route) for c in CASES}
    # git's POSTs (the packs themselves) are gone through by the real clone and push below
    tested |= {("POST", GIT)}
    assert declared == tested


@pytest.mark.parametrize("who", CALLERS)
def test_git_clone_and_push_need_a_developer(world: World, who: str, tmp_path: Path) -> None:
    user = {"owner": "alice", "admin": "admin"}.get(who, "bob")
    set_role(world, P, "bob", who if who in ("viewer", "developer") else None)
    allowed = who in ("developer", "owner", "admin")
    clone_url = world.server.project(P)["clone_url"]
    cloned = git_clone(clone_url, world.tokens[user], tmp_path / "mine")
    assert (cloned.returncode == 0) == allowed, cloned.stderr

    work = clone(world.server, P, tmp_path / "work")  # the admin's clone, to push from
    set_version(work, f"pushed by {who}")
    git("commit", "-qam", f"a push by {who}", cwd=work)
    before = state(world, P)
    url = clone_url.replace("http://", f"http://{user}:{world.tokens[user]}@")
    pushed = subprocess.run(
        ["git", "push", url, "HEAD:main"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert (pushed.returncode == 0) == allowed, pushed.stderr
    if allowed:
        world.server.wait_deployed(P, git("rev-parse", "HEAD", cwd=work))
        settle(world)
    else:
        assert state(world, P) == before


# --- the rules' edges ------------------------------------------------------------------------
def test_the_last_owner_can_be_neither_demoted_nor_removed(world: World) -> None:
    set_role(world, P, "bob", None)
    before = state(world, P)
    for api in (world.apis["alice"], world.admin):
        demote = api.put(f"/api/v1/projects/{P}/members/alice", json={"role": "developer"})
        assert demote.status_code == 409, demote.text
        assert demote.json()["detail"] == (
            f"project {P!r} needs an owner: make someone else owner first"
        )
        assert api.delete(f"/api/v1/projects/{P}/members/alice").status_code == 409
    alice = world.browsers["alice"]
    for path, data in (
        (f"/projects/{P}/sharing/members", {"username": "alice", "role": "viewer"}),
        (f"/projects/{P}/sharing/members/alice/delete", {}),
    ):
        r = alice.post(path, data)
        assert r.status_code == 303
        assert "needs an owner" in alice.http.get(r.headers["location"]).text  # the notice
    assert state(world, P) == before

    # with a second owner either may go; the one left is the last again
    set_role(world, P, "bob", "owner")
    try:
        r = world.apis["bob"].put(f"/api/v1/projects/{P}/members/alice", json={"role": "viewer"})
        assert r.status_code == 200, r.text
        assert world.apis["bob"].delete(f"/api/v1/projects/{P}/members/bob").status_code == 409
    finally:
        set_role(world, P, "alice", "owner")
        set_role(world, P, "bob", None)
    assert members(world) == {"alice": "owner", "carol": "developer"}


def test_an_unknown_role_is_422_and_says_only_which_roles_there_are(world: World) -> None:
    before = members(world)
    for api in (world.apis["alice"], world.admin):
        r = api.put(f"/api/v1/projects/{P}/members/carol", json={"role": "superuser"})
        assert r.status_code == 422
        assert r.json() == {"detail": "body.role: Input should be 'owner', 'developer' or 'viewer'"}
        assert "superuser" not in r.text  # what was sent is not repeated
    for body, detail in (
        ({}, "body.role: Field required"),
        ({"role": "viewer", "admin": True}, "body.admin: Extra inputs are not permitted"),
    ):
        r = world.admin.put(f"/api/v1/projects/{P}/members/carol", json=body)
        assert (r.status_code, r.json()) == (422, {"detail": detail})
    alice = world.browsers["alice"]
    r = alice.post(f"/projects/{P}/sharing/members", {"username": "carol", "role": "superuser"})
    assert r.status_code == 303
    page = alice.http.get(r.headers["location"]).text
    assert "unknown role &#39;superuser&#39;: use one of owner, developer, viewer" in page
    assert members(world) == before


def test_sharing_with_an_unknown_user_is_404(world: World) -> None:
    before = members(world)
    r = world.apis["alice"].put(f"/api/v1/projects/{P}/members/nobody", json={"role": "viewer"})
    assert (r.status_code, r.json()) == (404, {"detail": "user 'nobody' not found"})
    r = world.apis["alice"].delete(f"/api/v1/projects/{P}/members/nobody")
    assert (r.status_code, r.json()) == (404, {"detail": "user 'nobody' not found"})
    set_role(world, P, "bob", None)
    r = world.apis["alice"].delete(f"/api/v1/projects/{P}/members/bob")
    assert (r.status_code, r.json()) == (404, {"detail": f"'bob' is not a member of project {P!r}"})
    alice = world.browsers["alice"]
    r = alice.post(f"/projects/{P}/sharing/members", {"username": "nobody", "role": "viewer"})
    assert r.status_code == 303
    assert "user &#39;nobody&#39; not found" in alice.http.get(r.headers["location"]).text
    assert members(world) == before


SECTIONS = ("pipelines", "variables", "resources", "sharing", "clone")


def sections_of(page: str) -> set[str]:
    return {s for s in SECTIONS if f'id="{s}"' in page}


def test_each_role_sees_its_own_sections_of_the_project_page(world: World) -> None:
    set_role(world, P, "bob", "viewer")
    page = world.browsers["bob"].http.get(f"/projects/{P}")
    assert page.status_code == 200
    assert sections_of(page.text) == set()
    assert f"/projects/{P}/delete" not in page.text
    assert 'id="app-link"' in page.text  # a viewer opens the app
    for hidden in ("GREETING", "/git/", "Pipelines", "Sharing"):
        assert hidden not in page.text, hidden

    set_role(world, P, "bob", "developer")
    page = world.browsers["bob"].http.get(f"/projects/{P}")
    assert sections_of(page.text) == {"pipelines", "variables", "resources", "clone"}
    assert f"/projects/{P}/delete" not in page.text
    set_role(world, P, "bob", None)

    for owner in ("alice", "admin"):
        page = world.browsers[owner].http.get(f"/projects/{P}")
        assert sections_of(page.text) == set(SECTIONS), owner
        assert f"/projects/{P}/delete" in page.text


def test_the_list_shows_a_shared_project_once_shared(world: World) -> None:
    bob, api = world.browsers["bob"], world.apis["bob"]

    def listed() -> tuple[list[tuple[str, str]], bool, bool]:
        rows = [(p["name"], p["role"]) for p in api.get("/api/v1/projects").json()]
        marker = f'data-project="{P}"'
        return (
            rows,
            marker in bob.http.get("/projects").text,
            marker in bob.http.get("/projects/rows").text,
        )

    set_role(world, P, "bob", None)
    assert listed() == ([], False, False)
    set_role(world, P, "bob", "viewer")
    assert listed() == ([(P, "viewer")], True, True)
    set_role(world, P, "bob", "developer")
    assert listed() == ([(P, "developer")], True, True)
    set_role(world, P, "bob", None)
    assert listed() == ([], False, False)


def test_visibility_and_sleep_round_trip_through_patch(world: World) -> None:
    alice = world.apis["alice"]
    path = f"/api/v1/projects/{P}"
    try:
        for visibility in ("public", "internal", "private"):
            r = alice.patch(path, json={"visibility": visibility})
            assert r.status_code == 200, r.text
            assert r.json()["visibility"] == visibility
            assert world.server.project(P)["visibility"] == visibility
        r = alice.patch(path, json={"idle_timeout_s": 900})
        assert (r.json()["visibility"], r.json()["idle_timeout_s"]) == ("private", 900)
        assert alice.patch(path, json={}).json()["idle_timeout_s"] == 900  # left as it was
        assert alice.patch(path, json={"idle_timeout_s": 0}).json()["idle_timeout_s"] is None

        before = state(world, P)
        for body in (
            {"visibility": "secret"},
            {"idle_timeout_s": -1},
            {"idle_timeout_s": 31 * 24 * 3600},
            {"owner": "bob"},
        ):
            r = alice.patch(path, json=body)
            assert r.status_code == 422, body
            assert "secret" not in r.text and "bob" not in r.text  # not repeated back
        assert state(world, P) == before
    finally:
        _reset_project(world)


def test_the_owner_shown_is_an_owner_after_a_hand_over(world: World) -> None:
    set_role(world, P, "bob", "owner")
    set_role(world, P, "alice", "viewer")
    try:
        shown = world.apis["bob"].get(f"/api/v1/projects/{P}").json()["owner"]
        viewers_page = world.browsers["alice"].http.get(f"/projects/{P}").text
    finally:
        set_role(world, P, "alice", "owner")
        set_role(world, P, "bob", None)
    assert shown == "bob"  # the only owner now, not alice, a viewer
    assert "ask an owner (alice)" not in viewers_page


# --- PostgreSQL too --------------------------------------------------------------------------
def test_memberships_round_trip_and_survive_a_restart(database_url: str, tmp_path: Path) -> None:
    kit = write_tiny_kit(tmp_path / "kit")
    env = {"NAKAMA_DATABASE_URL": database_url}
    with running(
        tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv", extra_env=env
    ) as server:
        tokens = {name: make_user(server, name) for name in ("alice", "bob")}
        with client(server, tokens["alice"]) as alice, client(server, tokens["bob"]) as bob:
            assert alice.post("/api/v1/projects", json={"name": "kept"}).status_code == 201
            assert bob.get("/api/v1/projects").json() == []
            r = alice.put("/api/v1/projects/kept/members/bob", json={"role": "developer"})
            assert r.json() == {"username": "bob", "role": "developer"}
            assert [(p["name"], p["role"]) for p in bob.get("/api/v1/projects").json()] == [
                ("kept", "developer")
            ]
            for username, role in (("bob", "owner"), ("alice", "viewer")):
                r = alice.put(f"/api/v1/projects/kept/members/{username}", json={"role": role})
                assert r.status_code == 200, r.text
            assert bob.delete("/api/v1/projects/kept/members/bob").status_code == 409
            r = bob.patch("/api/v1/projects/kept", json={"visibility": "internal"})
            assert r.json()["visibility"] == "internal"
        server.wait_deployed("kept", server.pipelines("kept")[0]["commit"])
        server.stop()
        server.start()
        with client(server, tokens["alice"]) as alice, client(server, tokens["bob"]) as bob:
            assert alice.get("/api/v1/projects/kept/members").json() == [
                {"username": "alice", "role": "viewer"},
                {"username": "bob", "role": "owner"},
            ]
            assert alice.get("/api/v1/projects/kept").json()["visibility"] == "internal"
            assert alice.patch("/api/v1/projects/kept", json={}).status_code == 403
            assert bob.delete("/api/v1/projects/kept/members/alice").status_code == 204
            assert bob.get("/api/v1/projects/kept/members").json() == [
                {"username": "bob", "role": "owner"}
            ]
            assert alice.get("/api/v1/projects/kept").status_code == 404


def step_down_together(apis: dict[str, httpx.Client], project: str) -> dict[str, int]:
    """Each user of ``apis`` makes themselves a viewer of ``project`` at the same moment."""
    start = threading.Barrier(len(apis))
    answers: dict[str, int] = {}

    def step_down(name: str) -> None:
        start.wait()
        path = f"/api/v1/projects/{project}/members/{name}"
        answers[name] = apis[name].put(path, json={"role": "viewer"}).status_code

    threads = [threading.Thread(target=step_down, args=(name,)) for name in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_two_owners_stepping_down_at_once_leave_one(database_url: str, tmp_path: Path) -> None:
    """The last-owner rule holds when the last two owners step down at the same moment."""
    kit = write_tiny_kit(tmp_path / "kit")
    env = {"NAKAMA_DATABASE_URL": database_url}
    with running(
        tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv", extra_env=env
    ) as server:
        tokens = {name: make_user(server, name) for name in ("alice", "bob")}
        apis = {name: client(server, token) for name, token in tokens.items()}
        try:
            assert apis["alice"].post("/api/v1/projects", json={"name": "race"}).status_code == 201
            for _ in range(20):
                for name in apis:
                    set_owner = server.api.put(
                        f"/api/v1/projects/race/members/{name}", json={"role": "owner"}
                    )
                    assert set_owner.status_code == 200, set_owner.text
                answers = step_down_together(apis, "race")
                assert sorted(answers.values()) == [200, 409], answers
                roles = [m["role"] for m in server.api.get("/api/v1/projects/race/members").json()]
                assert sorted(roles) == ["owner", "viewer"], roles
        finally:
            for api in apis.values():
                api.close()
