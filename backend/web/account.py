"""The signed-in user's own page: a new API token for git and the CLI, shown once."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from backend.web.views import Renderer
from nakama.auth import Principal, TokenStore
from nakama.logs import get_logger

log = get_logger(__name__)


def make_account_router(
    *,
    tokens: TokenStore,
    render: Renderer,
    user: Callable[[Request], Principal],
    csrf: Callable[[Request], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    User = Annotated[Principal, Depends(user)]

    @router.get("/account", response_class=HTMLResponse)
    def account(request: Request, caller: User) -> Response:
        return render(request, "account.html", user=caller, token=None)

    @router.post("/account/tokens", dependencies=[Depends(csrf)])
    def new_token(request: Request, caller: User) -> Response:
        assert caller.username is not None
        _, token = tokens.new_user_token(caller.username)
        log.info("API token made from the web", username=caller.username)
        # Answered directly, not through a redirect: the token must not sit in the session.
        response = render(request, "account.html", user=caller, token=token)
        response.headers["Cache-Control"] = "no-store"
        return response

    return router
