"""The gateway's routes on Nakama's own host: the sign-in hop for apps, and the verify endpoint
an ingress controller asks before it lets a request through to an app (cluster mode).

Sign-in hop: a browser that opened a private app without a session is sent to
``/gateway/sign-in?app=<name>&next=<path>`` (or, from an ingress controller,
``?rd=<the full URL>``). There it signs in to Nakama as usual, and is sent back to the app's host
with a one-time code (``/_nakama/callback?code=…``), which the gateway on that host exchanges for
the app's own cookie. Nakama's session cookie never leaves Nakama's host, and the code is never
seen by the app.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from backend.gateway.front import CALLBACK_PATH, safe_next
from backend.gateway.pages import wants_html
from backend.gateway.viewer import Viewers
from backend.web.views import Renderer
from nakama.auth import Principal
from nakama.errors import NotFound
from nakama.hosts import BadHost, app_address, app_of_host
from nakama.logs import get_logger
from nakama.sessions import SessionStore
from nakama.settings import Settings

log = get_logger(__name__)


def make_gateway_router(
    *,
    settings: Settings,
    viewers: Viewers,
    sessions: SessionStore,
    may_open: Callable[[str, Principal | None], bool],
    user: Callable[[Request], Principal],
    render: Renderer,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    User = Annotated[Principal, Depends(user)]
    domain = settings.app_domain

    def target_of(app: str | None, next_path: str | None, rd: str | None) -> tuple[str, str, str]:
        """(app, origin of its host, path) from the query, checked to be one of our apps."""
        if rd:
            parts = urlsplit(rd)
            try:
                named = app_of_host(parts.netloc, apps_domain=domain)
            except BadHost:
                named = None
            if named is None or parts.scheme not in ("http", "https"):
                raise NotFound("that address is not an app of this Nakama")
            path = parts.path or "/"
            return (
                named,
                f"{parts.scheme}://{parts.netloc}",
                path + (f"?{parts.query}" if parts.query else ""),
            )
        if not app:
            raise NotFound("no app named")
        origin = app_address(app, apps_domain=domain, base_url=settings.base_url).rstrip("/")
        return app, origin, safe_next(next_path)

    @router.get("/gateway/sign-in")
    def sign_in(
        request: Request,
        caller: User,
        app: str | None = None,
        next: str | None = None,
        rd: str | None = None,
    ) -> Response:
        try:
            name, origin, path = target_of(app, next, rd)
            allowed = may_open(name, caller)
        except NotFound:
            return render(
                request, "not_found.html", user=caller, status_code=404,
                message=f"There is no app called {(app or rd or '')[:80]}.",
            )  # fmt: skip
        if not allowed:
            log.info("app refused", project=name, username=caller.username)
            return render(
                request, "not_found.html", user=caller, status_code=403, title="No access",
                message=f"{name} is not shared with you. Ask one of its owners to share it.",
            )  # fmt: skip
        session_id = request.session.get("sid")
        assert isinstance(session_id, str)  # `user` found a session
        code = sessions.issue_app_code(
            session_id, app=name, ttl_s=settings.gateway.sign_in_code_ttl_s
        )
        target = f"{origin}{CALLBACK_PATH}?code={quote(code)}&next={quote(path, safe='')}"
        response = RedirectResponse(target, status_code=303)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @router.get("/gateway/verify")
    async def verify(request: Request) -> Response:
        """For an ingress controller's forward-auth: 200 (with ``X-Forwarded-User``) if the
        original request may reach the app, 401 to send the viewer to sign in, 403 if they may
        not open it or the address is no app (ingress-nginx takes only 2xx, 401 and 403 from
        an auth URL). The original URL comes from ``X-Original-URL`` (ingress-nginx, nginx's
        ``auth_request``) or ``X-Forwarded-Proto/-Host/-Uri`` (Traefik, which has no sign-in
        redirect of its own: a browser gets a redirect to the sign-in from here)."""
        headers = request.headers
        original = headers.get("x-original-url")
        if original is None and headers.get("x-forwarded-host"):
            original = (
                f"{headers.get('x-forwarded-proto', 'https')}://{headers['x-forwarded-host']}"
                f"{headers.get('x-forwarded-uri', '/')}"
            )
        try:
            app = app_of_host(urlsplit(original or "").netloc, apps_domain=domain)
        except BadHost:
            app = None
        no_store = {"Cache-Control": "no-store"}
        if app is None:
            return Response("not an app address\n", status_code=403, headers=no_store)
        verdict = await viewers.ajudge(
            app, authorization=headers.get("authorization"), cookie=headers.get("cookie")
        )
        if verdict.outcome == "allow":
            if verdict.viewer is not None and verdict.viewer.username:
                no_store["X-Forwarded-User"] = verdict.viewer.username
            return Response(status_code=200, headers=no_store)
        if verdict.outcome == "sign-in":
            if "x-original-url" not in headers and wants_html(
                headers.get("x-forwarded-method", "GET"), headers.get("accept")
            ):
                target = f"{settings.base_url}/gateway/sign-in?rd={quote(original or '', safe='')}"
                return RedirectResponse(target, status_code=302, headers=no_store)
            return Response(status_code=401, headers=no_store)
        return Response(
            status_code=403 if verdict.outcome != "bad-token" else 401, headers=no_store
        )

    return router
