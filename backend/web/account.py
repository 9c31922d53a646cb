"""The signed-in user's own page: their API tokens (name, made, last used) with a Revoke button
each, and a new token, shown once. A revoked token stops working at once, for the API and git.

Another user's token id is answered as a missing one (404), so ids tell nothing about who holds
which tokens. :func:`page_route` answers a missing or forbidden thing with the not-found page, for
this router and the admin's user pages."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from backend.web.views import Renderer, flash
from nakama.auth import Principal, TokenStore
from nakama.errors import Forbidden, NotFound
from nakama.logs import get_logger
from nakama.sessions import SessionStore

log = get_logger(__name__)

# What a token's name may hold (as the API cuts it).
TOKEN_NAME_MAX = 100


def page_route(render: Renderer) -> type[APIRoute]:
    """A route class that answers NotFound with the not-found page (404) and Forbidden with the
    not-allowed page (403), as the project pages do."""

    class PageRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except (NotFound, Forbidden) as exc:
                    status = 404 if isinstance(exc, NotFound) else 403
                    return render(
                        request,
                        "not_found.html",
                        user=getattr(request.state, "user", None),
                        status_code=status,
                        message=str(exc),
                        title="Not found" if status == 404 else "Not allowed",
                    )

            return route

    return PageRoute


def make_account_router(
    *,
    tokens: TokenStore,
    sessions: SessionStore,
    render: Renderer,
    user: Callable[[Request], Principal],
    csrf: Callable[[Request], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(include_in_schema=False, route_class=page_route(render))
    User = Annotated[Principal, Depends(user)]

    def page(request: Request, caller: Principal, *, token: str | None = None) -> Response:
        assert caller.username is not None
        response = render(
            request,
            "account.html",
            user=caller,
            token=token,
            listed=tokens.list_tokens(caller.username),
            revoke_base="/account/tokens",
        )
        if token is not None:
            response.headers["Cache-Control"] = "no-store"
        return response

    @router.get("/account", response_class=HTMLResponse)
    def account(request: Request, caller: User) -> Response:
        return page(request, caller)

    @router.post("/account/tokens", dependencies=[Depends(csrf)])
    def new_token(
        request: Request,
        caller: User,
        name: Annotated[str, Form(max_length=TOKEN_NAME_MAX)] = "",
    ) -> Response:
        assert caller.username is not None
        _, token = tokens.new_user_token(caller.username, name=name.strip() or None)
        log.info("API token made from the web", username=caller.username)
        # Answered directly, not through a redirect: the token must not sit in the session.
        return page(request, caller, token=token)

    @router.post("/account/tokens/{token_id}/revoke", dependencies=[Depends(csrf)])
    def revoke(request: Request, caller: User, token_id: int) -> Response:
        assert caller.username is not None
        tokens.revoke_token(caller.username, token_id)  # NotFound for another user's id
        sessions.credentials_changed()
        log.info("API token revoked from the web", username=caller.username, token_id=token_id)
        flash(request, f"Token {token_id} revoked: it no longer works, for the API or git.")
        return RedirectResponse("/account#tokens", status_code=303)

    return router
