"""REST API v1: users, projects, their members, pipelines, logs and rollbacks, behind
bearer-token auth.

A user sees the projects they are a member of and does what their role there allows (a project
they are not a member of answers 404, as a missing one; a role too low for the action, 403);
an admin is owner of every project, and alone manages users. Users list and revoke their own
tokens. Wrong tokens from one client address get 429 with Retry-After past a limit."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from backend.databases import DatabasePublic, DatabaseService, DatabaseStatus
from backend.http_errors import validation_message
from backend.limits import LimitService, LimitsPublic
from backend.notifications import NotificationService, TargetCreated, TargetPublic
from backend.projects import ProjectService
from backend.users import (
    ProjectsChoice,
    TokenCreate,
    TokenPublic,
    UserRemoval,
    UserRemoved,
)
from backend.variables import VariableService
from nakama.access import Action
from nakama.auth import Principal, TokenStore, UserInfo
from nakama.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from nakama.limits import LimitOverrides
from nakama.logslice import cut_note
from nakama.models import (
    MemberPublic,
    MemberSet,
    PasswordSet,
    PipelinePublic,
    ProjectCreate,
    ProjectCreated,
    ProjectPublic,
    ProjectUpdate,
    RollbackRequest,
    UserCreate,
    UserPublic,
    UserToken,
    VariablePublic,
    VariableSet,
)
from nakama.sessions import SessionStore
from nakama.settings import LogSettings


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_admin: bool


class CurrentToken(BaseModel):
    """The token of a request: never the token itself."""

    id: int
    name: str
    # None: a token from before users existed.
    username: str | None
    is_admin: bool


_JSON = "application/json"
_bearer = HTTPBearer(auto_error=False, description="an API token (the admin token at first)")


async def _caller(request: Request) -> Principal:
    """The principal the router-wide dependency authenticated for this request (async: it
    only reads the request, and FastAPI runs a sync dependency in the thread pool)."""
    found: Principal = request.state.principal
    return found


Caller = Annotated[Principal, Depends(_caller)]


class _NoEchoValidation(APIRoute):
    """A route that answers a malformed request with where and what is wrong, never with the
    input itself: FastAPI's own 422 repeats it, and here it may be a secret."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise InvalidInput(validation_message(exc.errors())) from None

        return route


def make_api_router(
    *,
    projects: ProjectService,
    tokens: TokenStore,
    variables: VariableService,
    limits: LimitService,
    sessions: SessionStore,
    users: UserRemoval,
    log_read_bytes: int = LogSettings().pipeline_log_read_bytes,
    notifications: NotificationService | None = None,
    databases: DatabaseService | None = None,
) -> APIRouter:
    """``log_read_bytes``: what one read of a pipeline log returns at most (LogSettings);
    ``notifications`` or ``databases`` None: no routes of theirs."""

    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("missing bearer token")
        client = request.client.host if request.client else None
        found = tokens.authenticate(credentials.credentials, client=client)
        if found is None:
            raise Unauthorized("invalid token")
        request.state.principal = found
        return found

    check = projects.check
    sharing = projects.sharing

    def develop(name: str, caller: Principal) -> None:
        check(name, caller, Action.develop)

    def admin_only(caller: Principal) -> None:
        if not caller.is_admin:
            raise Forbidden("only an admin may do this")

    def user_public(user: UserInfo) -> UserPublic:
        return UserPublic(
            id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
        )

    # Every route answers a malformed body without repeating it: bodies carry passwords too.
    router = APIRouter(
        prefix="/api/v1", dependencies=[Depends(principal)], route_class=_NoEchoValidation
    )

    # --- users (admin) ---------------------------------------------------------------------
    @router.post("/users", status_code=201, response_model=UserToken, tags=["users"])
    def create_user(body: UserCreate, caller: Caller) -> UserToken:
        admin_only(caller)
        user, token = tokens.create_user(body.username, body.password)
        return UserToken(id=user.id, username=user.username, token=token)

    @router.get("/users", response_model=list[UserPublic], tags=["users"])
    def list_users(caller: Caller) -> list[UserPublic]:
        admin_only(caller)
        return [user_public(u) for u in tokens.list_users()]

    @router.patch("/users/{username}", response_model=UserPublic, tags=["users"])
    def update_user(username: str, body: UserUpdate, caller: Caller) -> UserPublic:
        """Make a user an admin or take that away (admins only; 409 for ``admin`` and for the
        last admin)."""
        admin_only(caller)
        user = tokens.set_admin(username, body.is_admin)
        sessions.credentials_changed()
        return user_public(user)

    @router.delete("/users/{username}", response_model=UserRemoved, tags=["users"])
    def remove_user(
        username: str, caller: Caller, projects: ProjectsChoice | None = None
    ) -> UserRemoved:
        """Remove a user (admins only; never ``admin``): their tokens, sessions and memberships
        go. Projects they alone own need ``projects``: ``transfer`` (to you) or ``delete``."""
        admin_only(caller)
        return users.remove(username, projects=projects, by=caller)

    def self_or_admin(username: str, caller: Principal, what: str) -> None:
        if not caller.is_admin and caller.username != username:
            raise Forbidden(f"only an admin or the user themselves may {what}")

    @router.post(
        "/users/{username}/tokens", status_code=201, response_model=UserToken, tags=["users"]
    )
    def new_user_token(username: str, caller: Caller, body: TokenCreate | None = None) -> UserToken:
        self_or_admin(username, caller, "make a user's tokens")
        name = body.name[:100] if body is not None and body.name else None
        user, token = tokens.new_user_token(username, name=name)
        return UserToken(id=user.id, username=user.username, token=token)

    @router.get("/users/{username}/tokens", response_model=list[TokenPublic], tags=["users"])
    def list_user_tokens(username: str, caller: Caller) -> list[TokenPublic]:
        """The user's tokens: id, name, when made and last used (never the token)."""
        self_or_admin(username, caller, "list a user's tokens")
        return [TokenPublic.of(t) for t in tokens.list_tokens(username)]

    @router.delete("/users/{username}/tokens/{token_id}", status_code=204, tags=["users"])
    def revoke_user_token(username: str, token_id: int, caller: Caller) -> Response:
        """Revoke one of the user's tokens: it stops working at once."""
        self_or_admin(username, caller, "revoke a user's tokens")
        tokens.revoke_token(username, token_id)
        sessions.credentials_changed()
        return Response(status_code=204)

    @router.get("/tokens/current", response_model=CurrentToken, tags=["users"])
    def current_token(caller: Caller) -> CurrentToken:
        """The token this request carries: its id and name, and whose it is (the CLI learns
        from it which user it signed in as, and which token to revoke at logout)."""
        return CurrentToken(
            id=caller.token_id,
            name=caller.name,
            username=caller.username,
            is_admin=caller.is_admin,
        )

    @router.put("/users/{username}/password", status_code=204, tags=["users"])
    def set_user_password(username: str, body: PasswordSet, caller: Caller) -> Response:
        """Set a user's password; every web session of theirs ends (API tokens stay)."""
        self_or_admin(username, caller, "set a user's password")
        user_id = tokens.set_password(username, body.password.get_secret_value())
        sessions.close_all(user_id)
        return Response(status_code=204)

    # --- projects --------------------------------------------------------------------------
    @router.post("/projects", status_code=201, response_model=ProjectCreated, tags=["projects"])
    def create_project(
        body: ProjectCreate, request: Request, response: Response, caller: Caller
    ) -> ProjectCreated:
        """Create a project from the starter kit, or import an existing git repository
        (``source``): ``detected`` then says which branch, main file and Python version were
        taken, and from where. The source's token is used for the import only, kept nowhere."""
        project = projects.create(body, owner_id=caller.user_id)
        response.headers["Location"] = str(request.url_for("get_project", name=project.name))
        return project

    @router.get("/projects", response_model=list[ProjectPublic], tags=["projects"])
    def list_projects(caller: Caller) -> Response:
        """The projects the caller is a member of (every one for an admin), with their role."""
        # Serialized here: the models are the service's own, so FastAPI's validation of the
        # answer (a copy of every project, in another trip to the thread pool) adds nothing.
        return Response(projects.list_json(caller), media_type=_JSON)

    @router.get("/projects/{name}", response_model=ProjectPublic, tags=["projects"])
    def get_project(name: str, caller: Caller) -> Response:
        check(name, caller)
        # Serialized here, as the list is: the service's own model needs no re-validation.
        return Response(projects.get(name, caller).model_dump_json(), media_type=_JSON)

    @router.patch("/projects/{name}", response_model=ProjectPublic, tags=["projects"])
    def update_project(name: str, body: ProjectUpdate, caller: Caller) -> ProjectPublic:
        """Change who may open the app (``visibility``) or when it sleeps (``idle_timeout_s``,
        0 for never); owners only."""
        check(name, caller, Action.own)
        if body.visibility is not None:
            sharing.set_visibility(name, body.visibility)
        if "idle_timeout_s" in body.model_fields_set:
            projects.set_idle_timeout(name, body.idle_timeout_s or None)
        return projects.get(name, caller)

    @router.get("/projects/{name}/members", response_model=list[MemberPublic], tags=["sharing"])
    def list_members(name: str, caller: Caller) -> list[MemberPublic]:
        check(name, caller)
        return [MemberPublic(username=m.username, role=m.role.name) for m in sharing.members(name)]

    @router.put(
        "/projects/{name}/members/{username}", response_model=MemberPublic, tags=["sharing"]
    )
    def set_member(name: str, username: str, body: MemberSet, caller: Caller) -> MemberPublic:
        """Add a user to the project with a role, or change their role; owners only (409 for
        demoting the last owner)."""
        check(name, caller, Action.own)
        member = sharing.set_member(name, username, body.role)
        return MemberPublic(username=member.username, role=member.role.name)

    @router.delete("/projects/{name}/members/{username}", status_code=204, tags=["sharing"])
    def remove_member(name: str, username: str, caller: Caller) -> Response:
        """Take a user out of the project; owners only (409 for the last owner)."""
        check(name, caller, Action.own)
        sharing.remove_member(name, username)
        return Response(status_code=204)

    @router.delete("/projects/{name}", status_code=202, tags=["projects"])
    def delete_project(name: str, caller: Caller) -> dict[str, str]:
        try:
            check(name, caller, Action.own)
        except NotFound:
            if caller.is_admin:
                # Delete is idempotent: deleting a project that is already gone succeeds.
                return {"status": "deleting", "name": name}
            raise
        projects.request_delete(name)
        return {"status": "deleting", "name": name}

    @router.get(
        "/projects/{name}/pipelines", response_model=list[PipelinePublic], tags=["pipelines"]
    )
    def list_pipelines(
        name: str, caller: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[PipelinePublic]:
        develop(name, caller)
        return projects.pipelines(name, limit=limit)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}",
        response_model=PipelinePublic,
        tags=["pipelines"],
    )
    def get_pipeline(name: str, pipeline_id: int, caller: Caller) -> PipelinePublic:
        develop(name, caller)
        return projects.pipeline(name, pipeline_id)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}/log",
        response_class=PlainTextResponse,
        tags=["pipelines"],
    )
    def pipeline_log(
        name: str,
        pipeline_id: int,
        caller: Caller,
        offset: Annotated[int | None, Query(ge=0)] = None,
        max_bytes: Annotated[int | None, Query()] = None,
    ) -> PlainTextResponse:
        """The log's last ``max_bytes`` bytes, or ``max_bytes`` from byte ``offset`` on (to page
        through it); ``max_bytes`` is at most, and by default, logs.pipeline_log_read_bytes.
        X-Log-Start and X-Log-End say which bytes of the log the answer holds, X-Log-Size how
        many it has now; a tail that leaves out the start begins with a line saying so."""
        develop(name, caller)
        piece = projects.pipeline_log(
            name, pipeline_id, offset=offset, max_bytes=max_bytes or log_read_bytes
        )
        text = piece.data.decode(errors="replace")
        headers = {
            "X-Log-Start": str(piece.start),
            "X-Log-End": str(piece.end),
            "X-Log-Size": str(piece.size),
        }
        return PlainTextResponse(
            (cut_note(piece) if offset is None else "") + text, headers=headers
        )

    # --- limits ----------------------------------------------------------------------------
    @router.get("/projects/{name}/limits", response_model=LimitsPublic, tags=["limits"])
    def get_limits(name: str, caller: Caller) -> LimitsPublic:
        """What the app may use (memory, CPU, processes, disk, log, replicas), how that is
        enforced, and what its ``$DATA_DIR`` holds now."""
        develop(name, caller)
        return limits.get(name)

    @router.put("/projects/{name}/limits", response_model=LimitsPublic, tags=["limits"])
    def set_limits(name: str, body: LimitOverrides, caller: Caller) -> LimitsPublic:
        """Replace the project's overrides of the default limits (fields left out take the
        default); admins only. The app restarts with them."""
        check(name, caller)
        admin_only(caller)
        return limits.set(name, body)

    @router.delete("/projects/{name}/limits", response_model=LimitsPublic, tags=["limits"])
    def reset_limits(name: str, caller: Caller) -> LimitsPublic:
        """Back to the default limits; admins only."""
        check(name, caller)
        admin_only(caller)
        return limits.set(name, LimitOverrides())

    @router.get("/projects/{name}/logs", response_class=PlainTextResponse, tags=["projects"])
    def app_logs(
        name: str, caller: Caller, tail: Annotated[int, Query(ge=1, le=10000)] = 200
    ) -> str:
        develop(name, caller)
        return projects.app_logs(name, tail=tail)

    @router.post("/projects/{name}/restart", response_model=ProjectPublic, tags=["projects"])
    def restart_project(name: str, caller: Caller) -> ProjectPublic:
        """Restart the app on the commit and build it runs, with its variables (developers
        and owners); answers once the new process answers, or with why it did not start. An
        app that is not running (asleep, or before its first deploy) is left as it is."""
        develop(name, caller)
        variables.restart(name)
        return projects.get(name, caller)

    # --- rollback --------------------------------------------------------------------------
    @router.post(
        "/projects/{name}/rollback",
        status_code=202,
        response_model=PipelinePublic,
        tags=["projects"],
    )
    def rollback_project(name: str, body: RollbackRequest, caller: Caller) -> PipelinePublic:
        """Deploy an earlier successful pipeline's commit again; answers with the new
        pipeline (409 if that pipeline did not succeed or its commit is deployed now)."""
        develop(name, caller)
        return projects.rollback(name, body.pipeline_id)

    @router.get(
        "/projects/{name}/rollback-targets",
        response_model=list[PipelinePublic],
        tags=["projects"],
    )
    def rollback_targets(
        name: str, caller: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[PipelinePublic]:
        """Successful pipelines, newest first, one per commit, without the deployed commit."""
        develop(name, caller)
        return projects.rollback_targets(name, limit=limit)

    # --- variables -------------------------------------------------------------------------
    variable_routes = APIRouter(route_class=_NoEchoValidation, tags=["variables"])

    @variable_routes.get("/projects/{name}/variables", response_model=list[VariablePublic])
    def list_variables(name: str, caller: Caller) -> list[VariablePublic]:
        """The app's environment variables by key; a secret shows at most its last 2 characters."""
        develop(name, caller)
        return variables.list(name)

    @variable_routes.put("/projects/{name}/variables/{key}", response_model=VariablePublic)
    def set_variable(name: str, key: str, body: VariableSet, caller: Caller) -> VariablePublic:
        """Create or replace a variable, then restart the app with it (422 for a name such as
        ``PORT`` or ``NAKAMA_*``, which Nakama sets itself)."""
        develop(name, caller)
        variables.set(name, key, body.value, secret=body.secret)
        return variables.get(name, key)

    @variable_routes.delete("/projects/{name}/variables/{key}", status_code=204)
    def delete_variable(name: str, key: str, caller: Caller) -> Response:
        """Remove a variable, then restart the app without it."""
        develop(name, caller)
        variables.delete(name, key)
        return Response(status_code=204)

    router.include_router(variable_routes)
    if notifications is not None:
        router.include_router(_notification_routes(notifications, develop=develop, check=check))
    if databases is not None:
        router.include_router(_database_routes(databases, develop=develop, check=check))
    return router


def _database_routes(
    databases: DatabaseService,
    *,
    develop: Callable[[str, Principal], None],
    check: Callable[..., object],
) -> APIRouter:
    routes = APIRouter(tags=["databases"])

    @routes.get("/projects/{name}/database", response_model=DatabaseStatus)
    def database_status(name: str, caller: Caller) -> DatabaseStatus:
        """Whether app databases are configured (if not, what the operator sets) and the
        project's database: its name, role and host; the password is only in the app's
        ``DATABASE_URL``."""
        develop(name, caller)
        return databases.status(name)

    @routes.post("/projects/{name}/database", status_code=201, response_model=DatabasePublic)
    def create_database(name: str, caller: Caller) -> DatabasePublic:
        """Make a PostgreSQL database for the app (owners): a role that owns it, no other
        role may connect; the app gets ``DATABASE_URL`` as a secret variable and restarts."""
        check(name, caller, Action.own)
        return databases.create(name)

    @routes.post("/projects/{name}/database/rotate", response_model=DatabasePublic)
    def rotate_database(name: str, caller: Caller) -> DatabasePublic:
        """New credentials (owners): the app restarts with them, then the old ones stop
        working. The data stays."""
        check(name, caller, Action.own)
        return databases.rotate(name)

    @routes.delete("/projects/{name}/database", status_code=204)
    def delete_database(name: str, caller: Caller) -> Response:
        """Drop the database and its roles, with its data (owners); the app restarts without
        ``DATABASE_URL``."""
        check(name, caller, Action.own)
        databases.delete(name)
        return Response(status_code=204)

    return routes


class NotificationTargetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "slack"] = "webhook"
    url: SecretStr = Field(description="where to POST (http or https; its path may be a secret)")
    on_deploy: bool = Field(default=False, description="also when a deploy goes live")


def _notification_routes(
    notifications: NotificationService,
    *,
    develop: Callable[[str, Principal], None],
    check: Callable[..., object],
) -> APIRouter:
    routes = APIRouter(route_class=_NoEchoValidation, tags=["notifications"])

    @routes.get("/projects/{name}/notifications", response_model=list[TargetPublic])
    def list_targets(name: str, caller: Caller) -> list[TargetPublic]:
        """Where the project's pipeline failures (and deploys, if asked) are sent; each URL as
        its scheme and host only."""
        develop(name, caller)
        return notifications.list(name)

    @routes.post("/projects/{name}/notifications", status_code=201, response_model=TargetCreated)
    def add_target(name: str, body: NotificationTargetCreate, caller: Caller) -> TargetCreated:
        """Add a target; owners only. A ``webhook`` target's signing secret is in this answer
        and never again: check ``X-Nakama-Signature`` (``sha256=`` HMAC of the body) with it.
        A URL on a loopback, private or link-local address is refused unless the operator
        allows it."""
        check(name, caller, Action.own)
        return notifications.add(
            name, kind=body.kind, url=body.url.get_secret_value(), on_deploy=body.on_deploy
        )

    @routes.delete("/projects/{name}/notifications/{target_id}", status_code=204)
    def remove_target(name: str, target_id: int, caller: Caller) -> Response:
        """Remove a target; owners only."""
        check(name, caller, Action.own)
        notifications.remove(name, target_id)
        return Response(status_code=204)

    return routes
