"""The app gateway: Nakama's one HTTP port serves ``<name>.<apps_domain>`` by forwarding to that
app's loopback port, after checking who may open it; every other host goes on to Nakama itself.

Per request on an app's host: the Host header is checked (one, well-formed, our port), paths
under ``/_nakama/`` are the gateway's own (the sign-in callback), the viewer is judged
(:mod:`backend.gateway.viewer`), then the request is forwarded with Nakama's cookies and
credentials removed and ``X-Forwarded-*`` set, and counted in the route table so that a deploy
can drain the old process. An app that is asleep is woken; one that is building, crashed or
unknown gets a clear page instead of an error. In cluster mode apps are served by their own
Ingress, and this front only answers the ``/_nakama/`` paths routed to Nakama.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.gateway.metrics import GatewayMetrics
from backend.gateway.pages import gateway_page, wants_html
from backend.gateway.proxy import AppUnreachable, Upstream
from backend.gateway.proxy import Headers as RawHeaders
from backend.gateway.viewer import (
    IDENTITY_HEADERS,
    Verdict,
    Viewers,
    app_cookie_name,
    bearer_token,
    filter_set_cookie,
    strip_nakama_cookies,
)
from backend.local.routes import Routes
from nakama.hosts import BadHost, app_of_host, same_host_path
from nakama.logs import get_logger
from nakama.ports import AppStatus
from nakama.sessions import SessionStore
from nakama.settings import Settings

log = get_logger(__name__)

CALLBACK_PATH = "/_nakama/callback"
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# What an app's state means to someone opening it, when no process serves it.
_DOWN: dict[str, tuple[str, str]] = {
    "starting": ("Starting", "The app is starting. This page reloads itself."),
    "backoff": ("Restarting", "The app stopped and is being restarted. This page reloads itself."),
    "crashed": ("App crashed", "The app stopped. Its developers can see why in its log."),
    "stopped": (
        "Not running yet",
        "The app has no running version yet: its first build may "
        "still be under way. This page reloads itself.",
    ),
}


class AppProcesses(Protocol):
    """What the gateway needs of the local runtime."""

    def status(self, project: str) -> AppStatus: ...

    def is_sleeping(self, project: str) -> bool: ...

    def wake(self, project: str) -> None: ...


def safe_next(target: str | None) -> str:
    """A path on the app's host only (no open redirect)."""
    return same_host_path(target, default="/")


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        viewers: Viewers,
        sessions: SessionStore,
        fallback: ASGIApp,
        metrics: GatewayMetrics,
        upstream: Upstream | None = None,
        routes: Routes | None = None,
        processes: AppProcesses | None = None,
    ) -> None:
        """Without ``upstream`` (cluster mode) apps are not forwarded here."""
        self._settings = settings
        self._viewers = viewers
        self._sessions = sessions
        self._fallback = fallback
        self._metrics = metrics
        self._upstream = upstream
        self._routes = routes
        self._processes = processes
        self._domain = settings.app_domain
        self._secure = settings.base_url.startswith("https://")
        self._waking: dict[str, asyncio.Future[None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._fallback(scope, receive, send)
            return
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        if not hosts:
            await self._fallback(scope, receive, send)
            return
        try:
            if len(hosts) > 1:
                raise BadHost("more than one Host header")
            host = hosts[0].decode("latin-1")
            # The port may be a proxy's in front (nginx, an ingress): any well-formed one goes.
            app = app_of_host(host, apps_domain=self._domain)
        except BadHost as exc:
            await self._refuse(scope, receive, send, 400, "Bad request", f"{exc}.")
            return
        if app is None:
            await self._fallback(scope, receive, send)
            return
        started = time.perf_counter()
        status = await self._serve(app, scope, receive, send)
        self._metrics.request(app, status, time.perf_counter() - started)

    # --- one request for an app --------------------------------------------------------------
    async def _serve(self, app: str, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one request on ``app``'s host; returns the status it got (101: WebSocket)."""
        headers = Headers(scope=scope)
        if scope["path"].startswith("/_nakama/"):
            return await self._own_path(app, scope, receive, send)
        if self._upstream is None or self._routes is None or self._processes is None:
            return await self._refuse(
                scope, receive, send, 404, "Not here", "Apps are served by their own Ingress."
            )
        verdict = await self._viewers.ajudge(
            app, authorization=headers.get("authorization"), cookie=headers.get("cookie")
        )
        html = scope["type"] == "http" and wants_html(scope["method"], headers.get("accept"))
        refused = self._refusal(app, verdict, scope, html=html)
        if refused is not None:
            return await self._respond(scope, receive, send, refused)
        self._metrics.viewer(app, verdict.viewer)
        port = self._routes.port(app)
        if port is None:
            page = await self._without_process(app, html=html)
            if page is not None:
                return await self._respond(scope, receive, send, page)
        return await self._forward(app, scope, receive, send, verdict, html=html)

    def _refusal(self, app: str, verdict: Verdict, scope: Scope, *, html: bool) -> Response | None:
        if verdict.outcome == "allow":
            return None
        if verdict.outcome == "missing":
            return gateway_page(404, "No such app", f"There is no app called {app}.", html=html)
        if verdict.outcome == "bad-token":
            return gateway_page(
                401,
                "Invalid token",
                "The API token is not valid.",
                html=html,
                headers={"WWW-Authenticate": 'Bearer realm="nakama"'},
            )
        if verdict.outcome == "sign-in":
            if html:
                return RedirectResponse(self.sign_in_url(app, scope), status_code=303)
            return gateway_page(
                401,
                "Sign in first",
                f"{app} is private: sign in to Nakama in a browser, or send a member's API token "
                "as 'Authorization: Bearer <token>'.",
                html=False,
                headers={"WWW-Authenticate": 'Bearer realm="nakama"'},
            )
        who = verdict.viewer.username if verdict.viewer else "you"
        return gateway_page(
            403,
            "No access",
            f"{app} is not shared with {who}. Ask one of its owners to share it with you.",
            html=html,
            link=(f"{self._settings.base_url}/projects", "Your projects"),
        )

    def sign_in_url(self, app: str, scope: Scope) -> str:
        target = scope["path"] + (
            ("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else ""
        )
        return (
            f"{self._settings.base_url}/gateway/sign-in?app={quote(app)}"
            f"&next={quote(target, safe='')}"
        )

    async def _without_process(self, app: str, *, html: bool) -> Response | None:
        """A page when no process serves ``app`` (None: it is awake now, go on).

        The first page request that finds the app asleep gets the "Waking up" page at once
        (it reloads itself); its reload, and every request that is no page, waits for the
        wake-up under way (at most ``wake_wait_s``), so a browser sees one waiting page and
        then the app."""
        assert self._processes is not None and self._routes is not None
        waking = self._waking.get(app)
        asleep = await run_in_threadpool(self._processes.is_sleeping, app)
        if asleep and (waking is None or waking.done()):
            waking = self._wake(app)
            if html:
                return gateway_page(
                    503,
                    "Waking up",
                    f"{app} was asleep and is starting. This page reloads itself.",
                    refresh_s=1,
                    html=True,
                )
        if waking is not None and not waking.done():
            self._routes.touch(app)
            try:
                await asyncio.wait_for(asyncio.shield(waking), self._settings.gateway.wake_wait_s)
            except Exception:  # timed out or failed (logged where it failed)
                return gateway_page(
                    503,
                    "Waking up",
                    f"{app} is still waking up; try again in a few seconds.",
                    refresh_s=3,
                    html=html,
                )
            if self._routes.port(app) is not None:
                return None
        state = (await run_in_threadpool(self._processes.status, app)).state
        title, message = _DOWN.get(state, _DOWN["stopped"])
        refresh = 3 if state in ("starting", "backoff", "stopped") else None
        return gateway_page(503, title, message, refresh_s=refresh, html=html)

    def _wake(self, app: str) -> asyncio.Future[None]:
        """The wake-up of ``app``, started by the first request that found it asleep."""
        assert self._processes is not None and self._routes is not None
        self._routes.touch(app)
        waking = self._waking.get(app)
        if waking is None or waking.done():
            waking = asyncio.ensure_future(run_in_threadpool(self._processes.wake, app))
            self._waking[app] = waking

            def done(task: asyncio.Future[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    log.error("app did not wake", project=app, error=str(task.exception())[:300])

            waking.add_done_callback(done)
        return waking

    async def _forward(
        self, app: str, scope: Scope, receive: Receive, send: Send, verdict: Verdict, *, html: bool
    ) -> int:
        assert self._upstream is not None and self._routes is not None
        headers = self._upstream_headers(scope, verdict)
        status = {"code": 502}

        def response_headers(raw: RawHeaders) -> RawHeaders:
            out: RawHeaders = []
            for key, value in raw:
                if key in (b"server", b"date"):
                    continue  # the gateway's own are sent
                if key == b"set-cookie":
                    kept = filter_set_cookie(value.decode("latin-1"))
                    if kept is None:
                        continue
                    value = kept.encode("latin-1")
                out.append((key, value))
            return out

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            await send(message)

        with self._routes.forward(app) as port:
            if port is None:
                page = gateway_page(
                    503, "Restarting", "The app is restarting.", refresh_s=2, html=html
                )
                return await self._respond(scope, receive, send, page)
            try:
                if scope["type"] == "websocket":
                    await self._upstream.websocket(
                        scope, receive, tracked_send, port=port, headers=headers
                    )
                else:
                    await self._upstream.http(
                        scope,
                        receive,
                        tracked_send,
                        port=port,
                        headers=headers,
                        response_headers=response_headers,
                    )
            except AppUnreachable as exc:
                log.warning("app unreachable", project=app, port=port, error=str(exc))
                page = gateway_page(
                    502,
                    "App not answering",
                    f"{app} did not answer. It may be restarting: try again in a moment.",
                    refresh_s=3,
                    html=html,
                )
                return await self._respond(scope, receive, send, page)
        return status["code"]

    def _upstream_headers(self, scope: Scope, verdict: Verdict) -> RawHeaders:
        """The client's headers, less Nakama's cookies and token and any identity or
        forwarding headers it made up; plus who the viewer is and where the request came from."""
        out: RawHeaders = []
        forwarded_for = None
        for key, value in scope["headers"]:
            if key in IDENTITY_HEADERS:
                continue
            if key == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
                continue
            if key in _FORWARDED:
                continue
            if key == b"cookie":
                kept = strip_nakama_cookies(value.decode("latin-1"))
                if kept is None:
                    continue
                value = kept.encode("latin-1")
            elif key == b"authorization" and bearer_token(value.decode("latin-1")) is not None:
                continue
            out.append((key, value))
        client = scope.get("client")
        client_ip = client[0] if client else "unknown"
        chain = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
        scheme = scope.get("scheme", "http").replace("ws", "http")
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        out += [
            (b"x-forwarded-for", chain.encode("latin-1")),
            (b"x-forwarded-proto", scheme.encode("latin-1")),
            (b"x-forwarded-host", host),
        ]
        if verdict.viewer is not None and verdict.viewer.username:
            out.append((b"x-forwarded-user", verdict.viewer.username.encode()))
        return out

    # --- the gateway's own paths on an app's host ----------------------------------------------
    async def _own_path(self, app: str, scope: Scope, receive: Receive, send: Send) -> int:
        if scope["type"] != "http" or scope["path"] != CALLBACK_PATH:
            return await self._refuse(scope, receive, send, 404, "Not found", "No such page.")
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        code = query.get("code", "")
        session_id = (
            await run_in_threadpool(self._sessions.redeem_app_code, code, app=app)
            if code and len(code) <= 100
            else None
        )
        if session_id is None:
            page = gateway_page(
                400,
                "Sign-in link not valid",
                "This sign-in link was used already, has expired, or is for another app.",
                link=("/", f"Open {app} again"),
            )
            return await self._respond(scope, receive, send, page)
        response = RedirectResponse(safe_next(query.get("next")), status_code=303)
        response.set_cookie(
            app_cookie_name(secure=self._secure),
            session_id,
            max_age=self._settings.web.session_max_age_s,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="lax",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return await self._respond(scope, receive, send, response)

    # --- answering -----------------------------------------------------------------------------
    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, title: str, message: str
    ) -> int:
        html = scope["type"] == "http" and wants_html(
            scope.get("method", "GET"), Headers(scope=scope).get("accept")
        )
        return await self._respond(
            scope, receive, send, gateway_page(status, title, message, html=html)
        )

    @staticmethod
    async def _respond(scope: Scope, receive: Receive, send: Send, response: Response) -> int:
        if scope["type"] == "websocket":
            # Before the handshake is accepted, a close is answered with HTTP 403.
            await send({"type": "websocket.close", "code": 1008})
            return response.status_code
        await response(scope, receive, send)
        return response.status_code
