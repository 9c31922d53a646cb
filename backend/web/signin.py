"""Sign-in and sign-out with a local account: a password, or one of the user's API tokens (the
admin, made without a password, signs in with the admin token ``nakama up`` printed). Wrong
tries slow down their client address (:mod:`backend.web.throttle`), never the account."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from backend.web.security import end_session, start_session
from backend.web.throttle import SignInThrottle
from backend.web.views import Renderer
from nakama.auth import TokenStore
from nakama.hosts import same_host_path
from nakama.logs import get_logger
from nakama.sessions import SessionStore
from nakama.settings import WebSettings

log = get_logger(__name__)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    return same_host_path(target, default="/projects")


def make_signin_router(
    *,
    tokens: TokenStore,
    sessions: SessionStore,
    render: Renderer,
    csrf: Callable[[Request], Awaitable[None]],
    gitlab_sign_in: bool,
    web: WebSettings,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    throttle = SignInThrottle(web)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str | None = None) -> Response:
        return render(request, "login.html", next=safe_next(next), gitlab=gitlab_sign_in)

    @router.post("/login", dependencies=[Depends(csrf)])
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=40)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str | None, Form()] = None,
    ) -> Response:
        target = safe_next(next)
        client = request.client.host if request.client else "?"
        user_key = username.strip().lower()
        wait = throttle.reserve(client, user_key)  # counted as failed until proven right
        if wait > 0:
            log.warning("sign-in throttled", username=username[:40], client=client)
            seconds = math.ceil(wait)
            response = render(
                request,
                "login.html",
                status_code=429,
                next=target,
                gitlab=gitlab_sign_in,
                username=username,
                error=(
                    f"Too many failed attempts from your address. Wait {seconds} s, then try again."
                ),
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        principal = tokens.sign_in(user_key, password)
        if principal is None:
            log.info("sign-in refused", username=username[:40], client=client)
            return render(
                request,
                "login.html",
                status_code=401,
                next=target,
                gitlab=gitlab_sign_in,
                username=username,
                error="Wrong username or password.",
            )
        throttle.succeeded(client, user_key)
        start_session(request, principal, sessions)
        log.info("signed in", username=principal.username)
        return RedirectResponse(target, status_code=303)

    @router.post("/logout", dependencies=[Depends(csrf)])
    def logout(request: Request) -> Response:
        end_session(request, sessions)
        return RedirectResponse("/login", status_code=303)

    return router
