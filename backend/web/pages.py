"""The project pages: the list with live status, create, a project's page (app, clone commands,
deployment, pipelines, variables, resources, rollback, app log) and delete with a typed
confirmation.

Every page goes through the same services as the REST API and the same role check: a user sees
the projects they are a member of (another's is answered as missing) and what their role there
allows: a viewer the app's address only, a developer also pipelines, logs, variables, the app's
limits and rollback, an owner also sharing, sleep and delete. An admin is owner of every
project, and alone changes an app's limits."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from backend.databases import DatabaseService
from backend.http_errors import status_of
from backend.limits import LimitService
from backend.notifications import NotificationService
from backend.projects import ProjectService
from backend.variables import VariableService
from backend.web.views import Renderer, flash
from nakama.access import ROLES, VISIBILITIES, Action, Role
from nakama.auth import Principal
from nakama.errors import Conflict, Forbidden, InvalidInput, NakamaError, NotFound
from nakama.limits import parse_overrides
from nakama.limits_text import limit_rows, merge_overrides, stop_reason
from nakama.logs import get_logger
from nakama.models import ProjectCreate, ProjectPublic, ProjectSource
from nakama.names import NAME_EXAMPLE, name_problem

log = get_logger(__name__)

# Pipelines shown on a project's page.
PIPELINES_SHOWN = 20
# Lines of the app's log shown on its page.
APP_LOG_LINES = 200
# How the platform's isolation line begins when apps run without a sandbox
# (nakama.clients.sandbox.Sandbox.describe): every project page then warns of it.
UNSANDBOXED = "apps run UNSANDBOXED"
# The limits an admin changes from the project page (the others are kept as they are).
FORM_LIMITS = ("memory_mib", "cpu", "processes", "disk_mib")


def make_pages_router(
    *,
    projects: ProjectService,
    variables: VariableService,
    limits: LimitService,
    isolation: str,
    render: Renderer,
    user: Callable[[Request], Principal],
    csrf: Callable[[Request], Awaitable[None]],
    maintainer_of: Callable[[Principal], str | None],
    notifications: NotificationService | None = None,
    databases: DatabaseService | None = None,
) -> APIRouter:
    """``user`` is the dependency that yields the signed-in user (and keeps it in
    ``request.state.user``); ``maintainer_of`` names the forge user who becomes a new
    repository's maintainer (cluster mode: the GitLab user); ``isolation`` says how apps are
    kept apart (Platform.isolation), shown as a warning when they are not."""

    class PageRoute(APIRoute):
        """Answers a missing project or pipeline, and another user's, with the not-found page."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except (NotFound, Forbidden) as exc:
                    caller = getattr(request.state, "user", None)
                    status = 404 if isinstance(exc, NotFound) else 403
                    return render(
                        request,
                        "not_found.html",
                        user=caller,
                        status_code=status,
                        message=str(exc),
                        title="Not found" if status == 404 else "Not allowed",
                    )

            return route

    router = APIRouter(include_in_schema=False, route_class=PageRoute)
    User = Annotated[Principal, Depends(user)]
    Csrf = Depends(csrf)

    def needs(action: Action) -> Callable[[str, Principal], str]:
        def check(name: str, caller: User) -> str:
            """The project ``name``, once ``caller``'s role allows ``action`` (NotFound for a
            non-member, Forbidden for a role too low)."""
            projects.check(name, caller, action)
            return name

        return check

    Seen = Annotated[str, Depends(needs(Action.see))]
    Owned = Annotated[str, Depends(needs(Action.develop))]
    OwnerOf = Annotated[str, Depends(needs(Action.own))]
    warning = isolation if isolation.startswith(UNSANDBOXED) else None

    def project_context(name: str, caller: Principal) -> dict[str, Any]:
        project = projects.get(name, caller)
        pipelines = projects.pipelines(name, limit=PIPELINES_SHOWN)
        targets = {p.id for p in projects.rollback_targets(name)}
        return {"project": project, "pipelines": pipelines, "rollback_ids": targets}

    def resources_context(project: ProjectPublic) -> dict[str, Any]:
        """The Resources panel: the limits in force, how enforced, what $DATA_DIR holds."""
        answer = limits.get(project.name)
        return {
            "resources": limit_rows(answer.model_dump(), cluster=render.mode == "cluster"),
            "limits": answer,
            "isolation": isolation,
            "stop_reason": stop_reason(project.app_detail),
        }

    # --- the list --------------------------------------------------------------------------
    @router.get("/")
    def home() -> Response:
        return RedirectResponse("/projects", status_code=303)

    def listing(caller: Principal) -> list[Any]:
        return list(projects.list_for(caller))

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
            taken = projects.exists(name)
        return render(
            request, "_name_check.html", user=caller, name=name, problem=problem, taken=taken
        )

    @router.post("/projects", dependencies=[Csrf])
    def create(
        request: Request,
        caller: User,
        name: Annotated[str, Form()] = "",
        source_url: Annotated[str, Form()] = "",
        source_token: Annotated[str, Form()] = "",
        source_username: Annotated[str, Form()] = "",
        source_branch: Annotated[str, Form()] = "",
        source_main_file: Annotated[str, Form()] = "",
        source_python: Annotated[str, Form()] = "",
    ) -> Response:
        """Create a project from the starter kit or, with a URL, import that repository. A
        refusal shows the form again with what was typed, but never the token."""
        name = name.strip()
        typed = {
            "url": source_url.strip(),
            "username": source_username.strip(),
            "branch": source_branch.strip(),
            "main_file": source_main_file.strip(),
            "python_version": source_python.strip(),
        }

        def refused(status: int, error: str) -> Response:
            return render(
                request,
                "projects.html",
                user=caller,
                status_code=status,
                projects=listing(caller),
                name=name,
                source=typed,
                error=error,
            )

        try:
            body = ProjectCreate(name=name, maintainer=maintainer_of(caller))
        except ValueError:
            problem = name_problem(name) or "invalid name"
            return refused(422, f"{problem} ({NAME_EXAMPLE})")
        if typed["url"]:
            fields = {key: value for key, value in typed.items() if value}
            if source_token:
                fields["token"] = source_token
            try:
                body = body.model_copy(update={"source": ProjectSource.model_validate(fields)})
            except ValidationError as exc:
                # Where and what, never the input (it may be the token).
                problems = [
                    f"{' '.join(str(part) for part in error['loc'])}: {error['msg']}"
                    for error in exc.errors()[:3]
                ]
                return refused(422, "the import was not started: " + "; ".join(problems))
        try:
            created = projects.create(body, owner_id=caller.user_id)
        except NakamaError as exc:
            log.info("project not created from the web", project=name, error=str(exc))
            return refused(status_of(exc), str(exc))
        if created.detected is not None:
            said = "; ".join(created.detected.summary)
            flash(request, f"Project {name} imported ({said}): its first pipeline is running.")
        else:
            flash(request, f"Project {name} created: its first pipeline is running.")
        return RedirectResponse(f"/projects/{name}", status_code=303)

    # --- one project -----------------------------------------------------------------------
    @router.get("/projects/{name}", response_class=HTMLResponse)
    def project_page(request: Request, name: Seen, caller: User) -> Response:
        project = projects.get(name, caller)
        if project.role == Role.viewer.name:
            return render(
                request,
                "project_viewer.html",
                user=caller,
                project=project,
                isolation_warning=warning,
            )
        context = project_context(name, caller)
        sharing: dict[str, Any] = {}
        if project.role == Role.owner.name:
            sharing = {
                "members": projects.sharing.members(name),
                "roles": ROLES,
                "visibilities": VISIBILITIES,
            }
        return render(
            request,
            "project.html",
            user=caller,
            variables=variables.list(name),
            targets=notifications.list(name) if notifications is not None else None,
            database=databases.status(name) if databases is not None else None,
            **context,
            **resources_context(context["project"]),
            **sharing,
            isolation_warning=warning,
        )

    @router.get("/projects/{name}/live", response_class=HTMLResponse)
    def project_live(request: Request, name: Owned, caller: User) -> Response:
        """The parts of a project's page that change on their own: status and pipelines."""
        return render(request, "_project_live.html", user=caller, **project_context(name, caller))

    @router.get("/projects/{name}/app-log", response_class=HTMLResponse)
    def app_log(request: Request, name: Owned, caller: User) -> Response:
        text = projects.app_logs(name, tail=APP_LOG_LINES)
        return render(request, "_app_log.html", user=caller, text=text)

    @router.get("/projects/{name}/pipelines/{pipeline_id}", response_class=HTMLResponse)
    def pipeline_page(request: Request, name: Owned, pipeline_id: int, caller: User) -> Response:
        project = projects.get(name, caller)
        pipeline = projects.pipeline(name, pipeline_id)
        return render(
            request,
            "pipeline.html",
            user=caller,
            project=project,
            pipeline=pipeline,
            isolation_warning=warning,
        )

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

    # --- notifications ---------------------------------------------------------------------
    if notifications is not None:
        told = notifications

        @router.post("/projects/{name}/notifications", dependencies=[Csrf])
        def add_target(
            request: Request,
            name: OwnerOf,
            caller: User,
            url: Annotated[str, Form()] = "",
            kind: Annotated[str, Form()] = "webhook",
            on_deploy: Annotated[bool, Form()] = False,
        ) -> Response:
            """Add a target; the answer is a page of its own, the only one that shows a
            webhook's signing secret (never a flash message: that travels in a cookie)."""
            try:
                made = told.add(name, kind=kind, url=url.strip(), on_deploy=on_deploy)
            except (InvalidInput, Conflict) as exc:
                flash(request, str(exc), kind="error")
                return RedirectResponse(f"/projects/{name}#notifications", status_code=303)
            return render(
                request,
                "notification_added.html",
                user=caller,
                project=projects.get(name, caller),
                target=made,
            )

        @router.post("/projects/{name}/notifications/{target_id}/delete", dependencies=[Csrf])
        def remove_target(request: Request, name: OwnerOf, target_id: int) -> Response:
            told.remove(name, target_id)
            flash(request, f"Notification target {target_id} removed.")
            return RedirectResponse(f"/projects/{name}#notifications", status_code=303)

    # --- database --------------------------------------------------------------------------
    if databases is not None:
        addon = databases

        def _database_done(request: Request, name: str, change: Callable[[], str]) -> Response:
            try:
                flash(request, change())
            except (NotFound, Forbidden):
                raise
            except NakamaError as exc:
                flash(request, str(exc), kind="error")
            return RedirectResponse(f"/projects/{name}#database", status_code=303)

        @router.post("/projects/{name}/database", dependencies=[Csrf])
        def create_database(request: Request, name: OwnerOf) -> Response:
            return _database_done(
                request,
                name,
                lambda: (
                    f"Database {addon.create(name).database} made; the app reads it from "
                    "DATABASE_URL."
                ),
            )

        @router.post("/projects/{name}/database/rotate", dependencies=[Csrf])
        def rotate_database(request: Request, name: OwnerOf) -> Response:
            return _database_done(
                request,
                name,
                lambda: f"New credentials: the app now connects as {addon.rotate(name).role}.",
            )

        @router.post("/projects/{name}/database/delete", dependencies=[Csrf])
        def delete_database(
            request: Request, name: OwnerOf, confirm: Annotated[str, Form()] = ""
        ) -> Response:
            def dropped() -> str:
                if confirm.strip() != name:
                    raise InvalidInput(
                        f"{confirm.strip()[:60]!r} is not {name!r}; the database was not dropped"
                    )
                addon.delete(name)
                return "Database dropped, with its data; the app restarted without DATABASE_URL."

            return _database_done(request, name, dropped)

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

    # --- resources (admins change them) -----------------------------------------------------
    @router.post("/projects/{name}/limits", dependencies=[Csrf])
    def set_limits(
        request: Request,
        name: Seen,
        caller: User,
        memory_mib: Annotated[str, Form(max_length=20)] = "",
        cpu: Annotated[str, Form(max_length=20)] = "",
        processes: Annotated[str, Form(max_length=20)] = "",
        disk_mib: Annotated[str, Form(max_length=20)] = "",
    ) -> Response:
        """Set the app's memory, CPU, processes and disk (an empty field: the default); the
        other overrides stay, as the PUT of the API would drop them."""
        if not caller.is_admin:
            raise Forbidden("only an admin may do this")
        typed = dict(zip(FORM_LIMITS, (memory_mib, cpu, processes, disk_mib), strict=True))
        changes = {key: text.strip() or None for key, text in typed.items()}
        try:
            wanted = parse_overrides(merge_overrides(limits.get(name).overrides, changes))
            limits.set(name, wanted)
        except NotFound:
            raise
        except InvalidInput as exc:
            flash(request, f"Limits not changed: {exc}", kind="error")
        except NakamaError as exc:
            flash(request, f"Limits saved, but the app was not restarted: {exc}", kind="error")
        else:
            log.info("limits changed from the web", project=name, by=caller.username)
            flash(request, f"Limits of {name} saved; the app restarts with them.")
        return RedirectResponse(f"/projects/{name}#resources", status_code=303)

    # --- sharing (owners) ------------------------------------------------------------------
    def shared(request: Request, name: str, action: Callable[[], str]) -> Response:
        """Run a sharing change and come back to the panel with what happened."""
        try:
            flash(request, action())
        except NotFound as exc:
            if not projects.exists(name):
                raise
            flash(request, str(exc), kind="error")  # a user or member that is not there
        except NakamaError as exc:
            flash(request, str(exc), kind="error")
        return RedirectResponse(f"/projects/{name}#sharing", status_code=303)

    @router.post("/projects/{name}/sharing/visibility", dependencies=[Csrf])
    def set_visibility(
        request: Request, name: OwnerOf, visibility: Annotated[str, Form()]
    ) -> Response:
        def change() -> str:
            projects.sharing.set_visibility(name, visibility)
            return f"{name} is now {visibility}."

        return shared(request, name, change)

    @router.post("/projects/{name}/sharing/members", dependencies=[Csrf])
    def set_member(
        request: Request,
        name: OwnerOf,
        username: Annotated[str, Form(max_length=40)],
        role: Annotated[str, Form()],
    ) -> Response:
        def change() -> str:
            member = projects.sharing.set_member(name, username.strip().lower(), role)
            return f"{member.username} is now {member.role.name} of {name}."

        return shared(request, name, change)

    @router.post("/projects/{name}/sharing/members/{username}/delete", dependencies=[Csrf])
    def remove_member(request: Request, name: OwnerOf, username: str) -> Response:
        def change() -> str:
            projects.sharing.remove_member(name, username)
            return f"{username} no longer has access to {name}."

        return shared(request, name, change)

    @router.post("/projects/{name}/sharing/sleep", dependencies=[Csrf])
    def set_sleep(
        request: Request, name: OwnerOf, idle_minutes: Annotated[str, Form()] = ""
    ) -> Response:
        def change() -> str:
            text = idle_minutes.strip()
            if text in ("", "0"):
                projects.set_idle_timeout(name, None)
                return f"{name} never sleeps."
            if not text.isdigit() or not 1 <= int(text) <= 30 * 24 * 60:
                raise InvalidInput("idle time: a whole number of minutes from 1 to 43200")
            projects.set_idle_timeout(name, int(text) * 60)
            return f"{name} sleeps after {text} minutes without a request."

        return shared(request, name, change)

    # --- delete ----------------------------------------------------------------------------
    @router.get("/projects/{name}/delete", response_class=HTMLResponse)
    def delete_page(request: Request, name: OwnerOf, caller: User) -> Response:
        project = projects.get(name, caller)
        return render(
            request, "delete.html", user=caller, project=project, isolation_warning=warning
        )

    @router.post("/projects/{name}/delete", dependencies=[Csrf])
    def delete(
        request: Request, name: OwnerOf, caller: User, confirm: Annotated[str, Form()] = ""
    ) -> Response:
        project = projects.get(name, caller)
        if confirm.strip() != name:
            return render(
                request,
                "delete.html",
                user=caller,
                status_code=422,
                project=project,
                error=f"Type the project's name, {name}, to confirm.",
                isolation_warning=warning,
            )
        projects.request_delete(name)
        log.info("project delete requested from the web", project=name, by=caller.username)
        flash(request, f"Project {name} is being deleted.")
        return RedirectResponse("/projects", status_code=303)

    return router
