"""REST API v1: projects, their pipelines and logs, behind bearer-token auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.projects import ProjectService
from nakama.auth import Principal, TokenStore
from nakama.errors import Unauthorized
from nakama.models import PipelinePublic, ProjectCreate, ProjectPublic

_bearer = HTTPBearer(auto_error=False, description="an API token (the admin token at first)")


def make_api_router(*, projects: ProjectService, tokens: TokenStore) -> APIRouter:
    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("missing bearer token")
        found = tokens.authenticate(credentials.credentials)
        if found is None:
            raise Unauthorized("invalid token")
        return found

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal)])

    @router.post("/projects", status_code=201, response_model=ProjectPublic, tags=["projects"])
    def create_project(body: ProjectCreate, request: Request, response: Response) -> ProjectPublic:
        project = projects.create(body)
        response.headers["Location"] = str(request.url_for("get_project", name=project.name))
        return project

    @router.get("/projects", response_model=list[ProjectPublic], tags=["projects"])
    def list_projects() -> list[ProjectPublic]:
        return projects.list_all()

    @router.get("/projects/{name}", response_model=ProjectPublic, tags=["projects"])
    def get_project(name: str) -> ProjectPublic:
        return projects.get(name)

    @router.delete("/projects/{name}", status_code=202, tags=["projects"])
    def delete_project(name: str) -> dict[str, str]:
        projects.request_delete(name)
        return {"status": "deleting", "name": name}

    @router.get(
        "/projects/{name}/pipelines", response_model=list[PipelinePublic], tags=["pipelines"]
    )
    def list_pipelines(
        name: str, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[PipelinePublic]:
        return projects.pipelines(name, limit=limit)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}",
        response_model=PipelinePublic,
        tags=["pipelines"],
    )
    def get_pipeline(name: str, pipeline_id: int) -> PipelinePublic:
        return projects.pipeline(name, pipeline_id)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}/log",
        response_class=PlainTextResponse,
        tags=["pipelines"],
    )
    def pipeline_log(name: str, pipeline_id: int) -> str:
        return projects.pipeline_log(name, pipeline_id)

    @router.get("/projects/{name}/logs", response_class=PlainTextResponse, tags=["projects"])
    def app_logs(name: str, tail: Annotated[int, Query(ge=1, le=10000)] = 200) -> str:
        return projects.app_logs(name, tail=tail)

    return router
