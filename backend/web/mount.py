"""Puts the web UI on the FastAPI app: sessions, CSRF, static files and the pages' routers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from backend.databases import DatabaseService
from backend.limits import LimitService
from backend.notifications import NotificationService
from backend.projects import ProjectService
from backend.users import UserRemoval
from backend.variables import VariableService
from backend.web.account import make_account_router
from backend.web.admin_users import make_admin_users_router
from backend.web.pages import make_pages_router
from backend.web.security import (
    SESSION_COOKIE,
    CsrfRejected,
    SignInRequired,
    apps_source,
    check_csrf,
    origin_of,
    session_secret,
    signed_in,
)
from backend.web.signin import make_signin_router
from backend.web.streams import make_stream_router
from backend.web.views import STATIC_DIR, Renderer, make_templates
from nakama.auth import Principal, TokenStore
from nakama.db.session import Database
from nakama.logs import get_logger
from nakama.sessions import SessionStore
from nakama.settings import Settings

log = get_logger(__name__)


class WebAuth:
    """The two request checks every page uses: who is signed in, and the CSRF token."""

    def __init__(self, *, sessions: SessionStore, settings: Settings) -> None:
        self.sessions = sessions
        self._origins = {origin_of(settings.base_url)}

    def user(self, request: Request) -> Principal:
        principal = signed_in(request, self.sessions)
        if principal is None:
            raise SignInRequired()
        request.state.user = principal  # for pages made outside the route (not found)
        return principal

    async def csrf(self, request: Request) -> None:
        # This site as the browser reached it, besides the configured public URL.
        here = f"{request.url.scheme}://{request.headers.get('host', '')}"
        await check_csrf(request, allowed_origins=self._origins | {here})


def install_web(
    app: FastAPI,
    *,
    projects: ProjectService,
    variables: VariableService,
    limits: LimitService,
    isolation: str,
    tokens: TokenStore,
    db: Database,
    settings: Settings,
    sessions: SessionStore,
    maintainer_of: Callable[[Principal], str | None] = lambda _user: None,
    notifications: NotificationService | None = None,
    databases: DatabaseService | None = None,
    gitlab_sign_in: bool = False,
    extra_routers: Iterable[Callable[[WebAuth, Renderer], APIRouter]] = (),
) -> None:
    """Add the web UI to ``app``. ``extra_routers`` are made with the same auth and renderer
    (the GitLab sign-in in cluster mode)."""
    # How often open pages look for news. In cluster mode each look at a running pipeline asks
    # GitLab, so pages look less often there.
    local = settings.mode == "local"
    render = Renderer(
        make_templates(),
        mode=settings.mode,
        poll_s=2 if local else 5,
        apps=apps_source(settings.base_url, settings.app_domain),
    )
    auth = WebAuth(sessions=sessions, settings=settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=settings.web.session_max_age_s,
        same_site="lax",
        https_only=settings.base_url.startswith("https://"),
    )

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, _exc: SignInRequired) -> Response:
        asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = "/login?next=" + quote(asked, safe="/")
        if request.headers.get("HX-Request"):
            # htmx follows this header with a full page load.
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.url.path.endswith("/events"):
            return Response("sign in first", status_code=401)
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, exc: CsrfRejected) -> Response:
        log.warning("request refused", reason=str(exc), path=request.url.path)
        return render(request, "csrf.html", status_code=403)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(
        make_signin_router(
            tokens=tokens,
            sessions=sessions,
            render=render,
            csrf=auth.csrf,
            gitlab_sign_in=gitlab_sign_in,
            web=settings.web,
        )
    )
    app.include_router(
        make_pages_router(
            projects=projects,
            variables=variables,
            limits=limits,
            isolation=isolation,
            render=render,
            user=auth.user,
            csrf=auth.csrf,
            maintainer_of=maintainer_of,
            notifications=notifications,
            databases=databases,
        )
    )
    app.include_router(
        make_account_router(
            tokens=tokens, sessions=sessions, render=render, user=auth.user, csrf=auth.csrf
        )
    )
    app.include_router(
        make_admin_users_router(
            tokens=tokens,
            sessions=sessions,
            users=UserRemoval(db=db, tokens=tokens, sessions=sessions, projects=projects),
            db=db,
            render=render,
            user=auth.user,
            csrf=auth.csrf,
        )
    )
    app.include_router(
        make_stream_router(
            projects=projects,
            user=auth.user,
            interval_s=0.5 if local else 2.0,
            settings=settings.logs,
        )
    )
    for make in extra_routers:
        app.include_router(make(auth, render))
