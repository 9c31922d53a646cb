"""The project pages: the list with live status, create, a project's page (app, clone commands,
deployment, pipelines, variables, rollback, app log) and delete with a typed confirmation.

Every page goes through the same services as the REST API; a user sees only their own projects
(another's is answered as missing), an admin sees all."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from backend.http_errors import status_of
from backend.projects import ProjectService
from backend.variables import VariableService
from backend.web.views import Renderer, flash
from nakama.auth import Principal
from nakama.errors import InvalidInput, NakamaError, NotFound
from nakama.logs import get_logger
from nakama.models import ProjectCreate
from nakama.names import name_problem

log = get_logger(__name__)

# Pipelines shown on a project's page.
PIPELINES_SHOWN = 20
# Lines of the app's log shown on its page.
APP_LOG_LINES = 200


def make_pages_router(
    *,
    projects: ProjectService,
    variables: VariableService,
    render: Renderer,
    user: Callable[[Request], Principal],
    csrf: Callable[[Request], Awaitable[None]],
    maintainer_of: Callable[[Principal], str | None],
) -> APIRouter:
    """``user`` is the dependency that yields the signed-in user (and keeps it in
    ``request.state.user``); ``maintainer_of`` names the forge user who becomes a new
    repository's maintainer (cluster mode: the GitLab user)."""

    class PageRoute(APIRoute):
        """Answers a missing project or pipeline, and another user's, with the not-found page."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except NotFound as exc:
                    caller = getattr(request.state, "user", None)
                    return render(
                        request, "not_found.html", user=caller, status_code=404, message=str(exc)
                    )

            return route

    router = APIRouter(include_in_schema=False, route_class=PageRoute)
    User = Annotated[Principal, Depends(user)]
    Csrf = Depends(csrf)

    def owned(name: str, caller: User) -> str:
        """The project ``name``, once ``caller`` may see it (NotFound otherwise)."""
        projects.check_visible(name, caller)
        return name

    Owned = Annotated[str, Depends(owned)]

    def project_context(name: str) -> dict[str, Any]:
        project = projects.get(name)
        pipelines = projects.pipelines(name, limit=PIPELINES_SHOWN)
        targets = {p.id for p in projects.rollback_targets(name)}
        return {"project": project, "pipelines": pipelines, "rollback_ids": targets}

    # --- the list --------------------------------------------------------------------------
    @router.get("/")
    def home() -> Response:
        return RedirectResponse("/projects", status_code=303)

    def listing(caller: Principal) -> list[Any]:
        return list(projects.list_all(owner_id=caller.user_id, everyone=caller.is_admin))

    @router.get("/projects", response_class=HTMLResponse)
    def project_list(request: Request, caller: User) -> Response:
        return render(request, "projects.html", user=caller, projects=listing(caller))

    @router.get("/projects/rows", response_class=HTMLResponse)
    def project_rows(request: Request, caller: User) -> Response:
        return render(request, "_project_rows.html", user=caller, projects=listing(caller))

    @router.get("/projects/name-check", response_class=HTMLResponse)
    def name_check(request: Request, caller: User, name: str = "") -> Response:
        problem = name_problem(name) if name else None
        taken = False
        if problem is None and name:
            try:
                projects.owner(name)
                taken = True
            except NotFound:
                pass
        return render(
            request, "_name_check.html", user=caller, name=name, problem=problem, taken=taken
        )

    @router.post("/projects", dependencies=[Csrf])
    def create(request: Request, caller: User, name: Annotated[str, Form()] = "") -> Response:
        name = name.strip()
        try:
            body = ProjectCreate(name=name, maintainer=maintainer_of(caller))
        except ValueError:
            problem = name_problem(name) or "invalid name"
            return render(
                request,
                "projects.html",
                user=caller,
                status_code=422,
                projects=listing(caller),
                name=name,
                error=f"{problem} (a DNS-1123 label such as 'sales-dashboard')",
            )
        try:
            projects.create(body, owner_id=caller.user_id)
        except NakamaError as exc:
            log.info("project not created from the web", project=name, error=str(exc))
            return render(
                request,
                "projects.html",
                user=caller,
                status_code=status_of(exc),
                projects=listing(caller),
                name=name,
                error=str(exc),
            )
        flash(request, f"Project {name} created: its first pipeline is running.")
        return RedirectResponse(f"/projects/{name}", status_code=303)

    # --- one project -----------------------------------------------------------------------
    @router.get("/projects/{name}", response_class=HTMLResponse)
    def project_page(request: Request, name: Owned, caller: User) -> Response:
        context = project_context(name)
        return render(
            request, "project.html", user=caller, variables=variables.list(name), **context
        )

    @router.get("/projects/{name}/live", response_class=HTMLResponse)
    def project_live(request: Request, name: Owned, caller: User) -> Response:
        """The parts of a project's page that change on their own: status and pipelines."""
        return render(request, "_project_live.html", user=caller, **project_context(name))

    @router.get("/projects/{name}/app-log", response_class=HTMLResponse)
    def app_log(request: Request, name: Owned, caller: User) -> Response:
        text = projects.app_logs(name, tail=APP_LOG_LINES)
        return render(request, "_app_log.html", user=caller, text=text)

    @router.get("/projects/{name}/pipelines/{pipeline_id}", response_class=HTMLResponse)
    def pipeline_page(request: Request, name: Owned, pipeline_id: int, caller: User) -> Response:
        project = projects.get(name)
        pipeline = projects.pipeline(name, pipeline_id)
        return render(request, "pipeline.html", user=caller, project=project, pipeline=pipeline)

    @router.post("/projects/{name}/rollback", dependencies=[Csrf])
    def rollback(request: Request, name: Owned, pipeline_id: Annotated[int, Form()]) -> Response:
        try:
            started = projects.rollback(name, pipeline_id)
        except NotFound:
            raise
        except NakamaError as exc:
            flash(request, f"Rollback refused: {exc}", kind="error")
        else:
            flash(
                request,
                f"Rolling back to commit {started.commit[:8]}: pipeline #{started.id} started.",
            )
        return RedirectResponse(f"/projects/{name}#pipelines", status_code=303)

    # --- variables -------------------------------------------------------------------------
    @router.post("/projects/{name}/variables", dependencies=[Csrf])
    def set_variable(
        request: Request,
        name: Owned,
        key: Annotated[str, Form()],
        value: Annotated[str, Form()] = "",
        secret: Annotated[bool, Form()] = False,
    ) -> Response:
        key = key.strip()
        try:
            variables.set(name, key, value, secret=secret)
        except NotFound:
            raise
        except InvalidInput as exc:
            flash(request, str(exc), kind="error")
        except NakamaError as exc:
            flash(
                request, f"Variable {key} saved, but the app was not restarted: {exc}", kind="error"
            )
        else:
            kind = "Secret" if secret else "Variable"
            flash(request, f"{kind} {key} saved; the app restarts to pick it up.")
        return RedirectResponse(f"/projects/{name}#variables", status_code=303)

    @router.post("/projects/{name}/variables/{key}/delete", dependencies=[Csrf])
    def delete_variable(request: Request, name: Owned, key: str) -> Response:
        try:
            variables.delete(name, key)
        except NotFound:
            raise
        except NakamaError as exc:
            flash(
                request,
                f"Variable {key} removed, but the app was not restarted: {exc}",
                kind="error",
            )
        else:
            flash(request, f"Variable {key} removed; the app restarts without it.")
        return RedirectResponse(f"/projects/{name}#variables", status_code=303)

    # --- delete ----------------------------------------------------------------------------
    @router.get("/projects/{name}/delete", response_class=HTMLResponse)
    def delete_page(request: Request, name: Owned, caller: User) -> Response:
        return render(request, "delete.html", user=caller, project=projects.get(name))

    @router.post("/projects/{name}/delete", dependencies=[Csrf])
    def delete(
        request: Request, name: Owned, caller: User, confirm: Annotated[str, Form()] = ""
    ) -> Response:
        project = projects.get(name)
        if confirm.strip() != name:
            return render(
                request,
                "delete.html",
                user=caller,
                status_code=422,
                project=project,
                error=f"Type the project's name, {name}, to confirm.",
            )
        projects.request_delete(name)
        log.info("project delete requested from the web", project=name, by=caller.username)
        flash(request, f"Project {name} is being deleted.")
        return RedirectResponse("/projects", status_code=303)

    return router
