"""The admin's Users page: every user (name, admin or not, when made, how many projects), and
create, reset a password, make or unmake an admin, see and revoke a user's tokens, remove.

Each action goes through what the REST API uses (:class:`nakama.auth.TokenStore`,
:class:`backend.users.UserRemoval`, :class:`nakama.sessions.SessionStore`), with the same
rules: a password reset ends that user's web sessions, the last admin and the ``admin`` user stay
admins, a removal says what becomes of the projects the user alone owns and needs the name typed
back. A generated password and a new user's first token are shown once, in the answer itself.
To anyone but an admin every page here is a missing one (404). Each change is logged with who
made it."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from backend.http_errors import status_of
from backend.users import ProjectsChoice, UserRemoval
from backend.web.account import page_route
from backend.web.views import Renderer, flash
from nakama.auth import Principal, TokenStore
from nakama.db.session import Database
from nakama.db.tables import Project, ProjectMember
from nakama.errors import InvalidInput, NakamaError, NotFound
from nakama.logs import get_logger
from nakama.models import PASSWORD_MAX, PASSWORD_MIN
from nakama.sessions import SessionStore

log = get_logger(__name__)

PROJECT_CHOICES = ("transfer", "delete")


def new_password() -> str:
    """A generated password: 16 URL-safe characters (96 random bits)."""
    return secrets.token_urlsafe(12)


def projects_by_user(db: Database) -> dict[int, list[str]]:
    """Each user's projects (a member in any role, or the owner of record), by user id."""
    with db.session() as s:
        rows = [
            *s.execute(select(ProjectMember.user_id, ProjectMember.project)).all(),
            *s.execute(
                select(Project.owner_id, Project.name).where(Project.owner_id.is_not(None))
            ).all(),
        ]
    found: dict[int, set[str]] = {}
    for user_id, name in rows:
        if user_id is not None:  # the owner query leaves out projects without one
            found.setdefault(int(user_id), set()).add(str(name))
    return {user_id: sorted(names) for user_id, names in found.items()}


def _checked_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidInput(f"a password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    return password


def make_admin_users_router(
    *,
    tokens: TokenStore,
    sessions: SessionStore,
    users: UserRemoval,
    db: Database,
    render: Renderer,
    user: Callable[[Request], Principal],
    csrf: Callable[[Request], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(include_in_schema=False, route_class=page_route(render))

    def admin(request: Request) -> Principal:
        caller = user(request)
        if not caller.is_admin:
            raise NotFound("no such page")  # as for a page that does not exist
        return caller

    Admin = Annotated[Principal, Depends(admin)]
    Csrf = Depends(csrf)

    def listing(request: Request, caller: Principal, **context: Any) -> Response:
        held = projects_by_user(db)
        rows = [(u, len(held.get(u.id, []))) for u in tokens.list_users()]
        response = render(
            request,
            "users.html",
            user=caller,
            rows=rows,
            status_code=context.pop("status_code", 200),
            **context,
        )
        if context.get("shown"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @router.get("/users", response_class=HTMLResponse)
    def users_page(request: Request, caller: Admin) -> Response:
        return listing(request, caller)

    @router.post("/users", dependencies=[Csrf])
    def create(
        request: Request,
        caller: Admin,
        username: Annotated[str, Form(max_length=40)] = "",
        password: Annotated[str, Form(max_length=PASSWORD_MAX)] = "",
    ) -> Response:
        username = username.strip()
        generated = not password
        try:
            secret = new_password() if generated else _checked_password(password)
            made, token = tokens.create_user(username, secret)
        except NakamaError as exc:
            return listing(
                request, caller, status_code=status_of(exc), error=str(exc), typed=username
            )
        log.info("user created from the web", username=made.username, by=caller.username)
        # Shown in this answer only (never through the session or a redirect).
        shown = {
            "title": f"User {made.username} created.",
            "username": made.username,
            "password": secret if generated else None,
            "token": token,
        }
        return listing(request, caller, shown=shown)

    @router.post("/users/{username}/password", dependencies=[Csrf])
    def reset_password(
        request: Request,
        caller: Admin,
        username: str,
        password: Annotated[str, Form(max_length=PASSWORD_MAX)] = "",
    ) -> Response:
        generated = not password
        try:
            secret = new_password() if generated else _checked_password(password)
            user_id = tokens.set_password(username, secret)
        except NotFound:
            raise
        except NakamaError as exc:
            return listing(request, caller, status_code=status_of(exc), error=str(exc))
        # As the API's password change: every session of theirs ends (this one stays, if theirs).
        mine = request.session.get("sid") if user_id == caller.user_id else None
        ended = sessions.close_all(user_id, keep=mine if isinstance(mine, str) else None)
        log.info(
            "password reset from the web", username=username, by=caller.username, sessions=ended
        )
        shown = {
            "title": f"Password of {username} reset; {ended} web session(s) ended.",
            "username": username,
            "password": secret if generated else None,
            "token": None,
        }
        return listing(request, caller, shown=shown)

    @router.post("/users/{username}/admin", dependencies=[Csrf])
    def set_admin(
        request: Request,
        caller: Admin,
        username: str,
        is_admin: Annotated[bool, Form()],
    ) -> Response:
        try:
            changed = tokens.set_admin(username, is_admin)
        except NotFound:
            raise
        except NakamaError as exc:
            flash(request, str(exc), kind="error")
        else:
            sessions.credentials_changed()
            log.info(
                "admin changed from the web",
                username=username,
                is_admin=is_admin,
                by=caller.username,
            )
            what = "now an admin" if changed.is_admin else "no longer an admin"
            flash(request, f"{username} is {what}.")
        return RedirectResponse("/users", status_code=303)

    # --- a user's tokens -------------------------------------------------------------------
    @router.get("/users/{username}/tokens", response_class=HTMLResponse)
    def user_tokens(request: Request, caller: Admin, username: str) -> Response:
        listed = tokens.list_tokens(username)  # NotFound for a user that is not there
        return render(
            request,
            "users_tokens.html",
            user=caller,
            username=username,
            listed=listed,
            revoke_base=f"/users/{username}/tokens",
        )

    @router.post("/users/{username}/tokens/{token_id}/revoke", dependencies=[Csrf])
    def revoke(request: Request, caller: Admin, username: str, token_id: int) -> Response:
        tokens.revoke_token(username, token_id)
        sessions.credentials_changed()
        log.info(
            "API token revoked from the web",
            username=username,
            token_id=token_id,
            by=caller.username,
        )
        flash(request, f"Token {token_id} of {username} revoked.")
        return RedirectResponse(f"/users/{username}/tokens", status_code=303)

    # --- remove ----------------------------------------------------------------------------
    def remove_page(request: Request, caller: Principal, username: str, **context: Any) -> Response:
        user_id = tokens.user_id_of(username)  # NotFound for a user that is not there
        return render(
            request,
            "users_remove.html",
            user=caller,
            username=username,
            projects=projects_by_user(db).get(user_id, []),
            choices=PROJECT_CHOICES,
            **context,
        )

    @router.get("/users/{username}/remove", response_class=HTMLResponse)
    def remove_form(request: Request, caller: Admin, username: str) -> Response:
        return remove_page(request, caller, username)

    @router.post("/users/{username}/remove", dependencies=[Csrf])
    def remove(
        request: Request,
        caller: Admin,
        username: str,
        confirm: Annotated[str, Form()] = "",
        projects: Annotated[str, Form()] = "",
    ) -> Response:
        if confirm.strip() != username:
            return remove_page(
                request,
                caller,
                username,
                status_code=422,
                error=f"Type the user's name, {username}, to confirm.",
            )
        choice: ProjectsChoice | None = (
            "transfer" if projects == "transfer" else "delete" if projects == "delete" else None
        )
        try:
            done = users.remove(username, projects=choice, by=caller)
        except NotFound:
            raise
        except NakamaError as exc:
            return remove_page(
                request, caller, username, status_code=status_of(exc), error=str(exc)
            )
        log.info("user removed from the web", username=username, by=caller.username)
        parts = [f"User {username} removed."]
        if done.transferred:
            parts.append(f"Now yours: {', '.join(done.transferred)}.")
        if done.deleted:
            parts.append(f"Being deleted: {', '.join(done.deleted)}.")
        flash(request, " ".join(parts))
        return RedirectResponse("/users", status_code=303)

    return router
