"""REST API v1: users, projects, their pipelines and logs, behind bearer-token auth.

A user sees and changes only their own projects (another's answer 404, as missing ones);
an admin sees all, and alone manages users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.projects import ProjectService
from nakama.auth import Principal, TokenStore, UserInfo
from nakama.errors import Forbidden, NotFound, Unauthorized
from nakama.models import (
    PipelinePublic,
    ProjectCreate,
    ProjectPublic,
    UserCreate,
    UserPublic,
    UserToken,
)

_bearer = HTTPBearer(auto_error=False, description="an API token (the admin token at first)")


def _caller(request: Request) -> Principal:
    """The principal the router-wide dependency authenticated for this request."""
    found: Principal = request.state.principal
    return found


Caller = Annotated[Principal, Depends(_caller)]


def make_api_router(*, projects: ProjectService, tokens: TokenStore) -> APIRouter:
    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("missing bearer token")
        found = tokens.authenticate(credentials.credentials)
        if found is None:
            raise Unauthorized("invalid token")
        request.state.principal = found
        return found

    def visible(name: str, caller: Principal) -> None:
        """NotFound unless ``caller`` may see project ``name`` (another's is as if missing)."""
        if not caller.may_see(projects.owner(name)):
            raise NotFound(f"project {name!r} not found")

    def admin_only(caller: Principal) -> None:
        if not caller.is_admin:
            raise Forbidden("only an admin may do this")

    def user_public(user: UserInfo) -> UserPublic:
        return UserPublic(
            id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
        )

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal)])

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

    @router.post(
        "/users/{username}/tokens", status_code=201, response_model=UserToken, tags=["users"]
    )
    def new_user_token(username: str, caller: Caller) -> UserToken:
        if not caller.is_admin and caller.username != username:
            raise Forbidden("only an admin or the user themselves may make a user's tokens")
        user, token = tokens.new_user_token(username)
        return UserToken(id=user.id, username=user.username, token=token)

    # --- projects --------------------------------------------------------------------------
    @router.post("/projects", status_code=201, response_model=ProjectPublic, tags=["projects"])
    def create_project(
        body: ProjectCreate, request: Request, response: Response, caller: Caller
    ) -> ProjectPublic:
        project = projects.create(body, owner_id=caller.user_id)
        response.headers["Location"] = str(request.url_for("get_project", name=project.name))
        return project

    @router.get("/projects", response_model=list[ProjectPublic], tags=["projects"])
    def list_projects(caller: Caller) -> list[ProjectPublic]:
        return projects.list_all(owner_id=caller.user_id, everyone=caller.is_admin)

    @router.get("/projects/{name}", response_model=ProjectPublic, tags=["projects"])
    def get_project(name: str, caller: Caller) -> ProjectPublic:
        visible(name, caller)
        return projects.get(name)

    @router.delete("/projects/{name}", status_code=202, tags=["projects"])
    def delete_project(name: str, caller: Caller) -> dict[str, str]:
        try:
            visible(name, caller)
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
        visible(name, caller)
        return projects.pipelines(name, limit=limit)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}",
        response_model=PipelinePublic,
        tags=["pipelines"],
    )
    def get_pipeline(name: str, pipeline_id: int, caller: Caller) -> PipelinePublic:
        visible(name, caller)
        return projects.pipeline(name, pipeline_id)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}/log",
        response_class=PlainTextResponse,
        tags=["pipelines"],
    )
    def pipeline_log(name: str, pipeline_id: int, caller: Caller) -> str:
        visible(name, caller)
        return projects.pipeline_log(name, pipeline_id)

    @router.get("/projects/{name}/logs", response_class=PlainTextResponse, tags=["projects"])
    def app_logs(
        name: str, caller: Caller, tail: Annotated[int, Query(ge=1, le=10000)] = 200
    ) -> str:
        visible(name, caller)
        return projects.app_logs(name, tail=tail)

    return router
