"""Sign in with GitLab (cluster mode): the OAuth 2 authorization code flow with PKCE against the
GitLab that holds the apps, through authlib's Starlette client.

GitLab only says who the user is. Its immutable user id is linked to a local user (made at the
first sign-in, see :meth:`nakama.auth.TokenStore.gitlab_user`; the username only names it), and
that user gets an ordinary Nakama session. GitLab's access token is used once, to read
``/api/v4/user``, and kept nowhere: not in the session, the database or a log line; nor are the
client secret and the code.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from backend.web.security import start_session
from backend.web.signin import safe_next
from backend.web.views import Renderer
from nakama.auth import GitLabIdentity, TokenStore
from nakama.logs import get_logger
from nakama.settings import Settings

try:  # the HTTP client authlib uses: httpx2 where it is installed, else httpx
    from httpx2 import HTTPError, HTTPStatusError  # type: ignore[import-not-found]
except ImportError:
    from httpx import HTTPError, HTTPStatusError

with warnings.catch_warnings():
    # Without httpx2, authlib says at import that it falls back to httpx (a deprecation warning
    # that its own module, once imported, always shows).
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
    from authlib.integrations.starlette_client import OAuth

if TYPE_CHECKING:
    from backend.web.mount import WebAuth

log = get_logger(__name__)

SCOPE = "read_user"
CALLBACK_PATH = "/login/gitlab/callback"
# Where to go after signing in, kept in the session across the round trip to GitLab.
NEXT_KEY = "gitlab_next"

DENIED = "GitLab sign-in was cancelled: Nakama was not allowed to read your GitLab account."
STATE_MISMATCH = (
    "This GitLab sign-in does not belong to this browser session (it expired, or was started "
    "elsewhere). Start again."
)
BAD_CALLBACK = "The answer from GitLab was incomplete. Start the sign-in again."
REFUSED = (
    "GitLab refused the sign-in. Try again; if it keeps failing, ask the administrator to check "
    "the GitLab OAuth application Nakama uses."
)
UNREACHABLE = (
    "GitLab cannot be reached right now. Try again in a few minutes, or sign in with a Nakama "
    "account."
)
NOT_ACTIVE = "Your GitLab account is blocked or deactivated, so it cannot sign in to Nakama."
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


class SignInFailed(Exception):
    """Why a GitLab sign-in ended without a session: the message the page shows, its status,
    and a short reason for the log (never a secret, a code or a token)."""

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(reason)
        self.message, self.status, self.reason = message, status, reason


def callback_problem(params: Mapping[str, str]) -> SignInFailed | None:
    """What is wrong with GitLab's redirect back, before anything is sent to GitLab."""
    error = params.get("error")
    if error == "access_denied":
        return SignInFailed(DENIED, 401, "access denied by the user")
    if error:
        code = error if _ERROR_CODE.match(error) else "unknown"
        return SignInFailed(f"GitLab refused the sign-in ({code}).", 400, f"GitLab error {code}")
    if not params.get("code") or not params.get("state"):
        return SignInFailed(BAD_CALLBACK, 400, "no code or state")
    return None


def gitlab_identity(user: Any) -> GitLabIdentity:
    """Who GitLab's ``/api/v4/user`` answer is (its id, username and when the account was
    made), if that is an active user."""
    if not isinstance(user, dict) or not isinstance(user.get("username"), str):
        raise SignInFailed(UNREACHABLE, 503, "unexpected /user answer")
    username: str = user["username"]
    if not username:
        raise SignInFailed(UNREACHABLE, 503, "unexpected /user answer")
    if user.get("state") != "active":
        raise SignInFailed(NOT_ACTIVE, 401, "GitLab user not active")
    user_id = user.get("id")
    # bool is an int in Python; GitLab's ids are positive integers.
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 1:
        raise SignInFailed(UNREACHABLE, 503, "unexpected /user answer")
    return GitLabIdentity(id=user_id, username=username, created_at=_moment(user.get("created_at")))


def _moment(value: Any) -> datetime | None:
    """GitLab's ISO 8601 time ("2012-05-23T08:00:58.000Z"), or None if absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _http_failure(exc: HTTPStatusError) -> SignInFailed:
    status = exc.response.status_code
    if status == 429 or status >= 500:
        return SignInFailed(UNREACHABLE, 503, f"GitLab answered {status}")
    return SignInFailed(REFUSED, 401, f"GitLab answered {status}")


def make_gitlab_signin_router(
    auth: WebAuth, render: Renderer, *, settings: Settings, tokens: TokenStore
) -> APIRouter:
    """``GET /login/gitlab`` sends the browser to GitLab; ``GET /login/gitlab/callback`` is
    where GitLab sends it back (the OAuth application's redirect URI)."""
    client_id = settings.web.gitlab_oauth_client_id
    secret = settings.web.gitlab_oauth_client_secret
    if not client_id or secret is None:
        raise ValueError("GitLab sign-in needs gitlab_oauth_client_id and its client secret")
    gitlab_url = settings.gitlab.url.rstrip("/")
    redirect_uri = settings.base_url + CALLBACK_PATH
    oauth = OAuth()
    gitlab = oauth.register(
        name="gitlab",
        client_id=client_id,
        client_secret=secret.get_secret_value(),
        authorize_url=f"{gitlab_url}/oauth/authorize",
        access_token_url=f"{gitlab_url}/oauth/token",
        api_base_url=f"{gitlab_url}/api/v4/",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "verify": settings.gitlab.verify_ssl,
            "timeout": settings.gitlab.timeout_s,
        },
    )
    router = APIRouter(include_in_schema=False)

    async def identify(request: Request) -> GitLabIdentity:
        """Who GitLab sent back, via the code and a token."""
        problem = callback_problem(request.query_params)
        if problem is not None:
            raise problem
        try:
            token = await gitlab.authorize_access_token(request)
            answer = await gitlab.get("user", token=token)
        except MismatchingStateError as exc:
            raise SignInFailed(STATE_MISMATCH, 400, "state mismatch") from exc
        except OAuthError as exc:
            code = exc.error if _ERROR_CODE.match(str(exc.error)) else "unknown"
            raise SignInFailed(REFUSED, 401, f"token refused: {code}") from exc
        except HTTPStatusError as exc:
            raise _http_failure(exc) from exc
        except (HTTPError, ValueError) as exc:  # unreachable, timed out, or not JSON
            raise SignInFailed(UNREACHABLE, 503, type(exc).__name__) from exc
        if answer.status_code == 403:  # the user was blocked or deactivated since approving
            raise SignInFailed(NOT_ACTIVE, 401, "/user answered 403")
        if answer.status_code == 401:
            raise SignInFailed(REFUSED, 401, "/user answered 401")
        if answer.status_code != 200:
            raise SignInFailed(UNREACHABLE, 503, f"/user answered {answer.status_code}")
        try:
            body = answer.json()
        except ValueError as exc:
            raise SignInFailed(UNREACHABLE, 503, "/user answer is not JSON") from exc
        return gitlab_identity(body)

    @router.get("/login/gitlab")
    async def start(request: Request, next: str | None = None) -> Response:
        request.session[NEXT_KEY] = safe_next(next)
        response: Response = await gitlab.authorize_redirect(request, redirect_uri)
        return response

    @router.get(CALLBACK_PATH)
    async def callback(request: Request) -> Response:
        target = safe_next(request.session.get(NEXT_KEY))
        try:
            identity = await identify(request)
        except SignInFailed as failed:
            log.warning("GitLab sign-in failed", reason=failed.reason)
            return render(
                request,
                "login.html",
                status_code=failed.status,
                next=target,
                gitlab=True,
                error=failed.message,
            )
        principal = await run_in_threadpool(tokens.gitlab_user, identity)
        start_session(request, principal, auth.sessions)
        log.info(
            "signed in with GitLab",
            username=principal.username,
            gitlab_user=identity.username,
            gitlab_id=identity.id,
        )
        return RedirectResponse(target, status_code=303)

    return router
