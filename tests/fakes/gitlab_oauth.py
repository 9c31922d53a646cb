"""The GitLab fake's OAuth 2 provider: applications, ``/oauth/authorize``, ``/oauth/token`` and
the access tokens it issues, which the fake's ``/api/v4`` accepts within their scopes.

GitLab is a Doorkeeper OAuth 2 provider. For the authorization code grant with PKCE (RFC 6749
§4.1, RFC 7636) this does what GitLab does: the redirect URI must be one the application
registered, exactly; a code lives 10 minutes and works once (using it again revokes the tokens
made with it); the ``code_verifier`` is checked against the S256 (or plain) challenge; the
client authenticates with HTTP Basic or ``client_secret`` in the form; answers and error bodies
have GitLab's shapes and status codes; an access token lives 2 hours and comes with a refresh
token. A ``read_user`` token may read ``/api/v4/user`` and ``/api/v4/users`` only.

There is no browser sign-in page: :meth:`OAuthProvider.sign_in` stands for a browser that is
signed in to GitLab, whose user approves every request unless :attr:`OAuthProvider.deny` is set
(then GitLab redirects back with ``error=access_denied``, as when the user clicks "Deny").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from tests.fakes.gitlab import GitLabFake
    from tests.fakes.gitlab_api import FakeUser

# Doorkeeper's defaults in GitLab: codes for 10 minutes, access tokens for 2 hours.
CODE_TTL_S = 600
TOKEN_TTL_S = 7200
SCOPES = (
    "api",
    "read_api",
    "read_user",
    "read_repository",
    "write_repository",
    "openid",
    "profile",
    "email",
)
# What a token without api / read_api may call: read_user's endpoints.
_READ_USER_PATHS = ("/api/v4/user", "/api/v4/users")

_INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
_INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)
_ACCESS_DENIED = "The resource owner or authorization server denied the request."
_INVALID_REDIRECT = "The redirect URI included is not valid."


@dataclass
class OAuthApplication:
    """An application registered in GitLab (Admin area or user settings → Applications)."""

    name: str
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    confidential: bool = True


@dataclass
class _Grant:
    """One authorization code and what it was issued for."""

    code: str
    client_id: str
    user_id: int
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str | None
    expires_at: float
    used: bool = False


@dataclass
class OAuthToken:
    access_token: str
    refresh_token: str
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    created_at: int
    expires_in: int = TOKEN_TTL_S
    code: str | None = None  # the authorization code it was made with
    revoked: bool = False

    def valid(self, now: float) -> bool:
        return not self.revoked and now < self.created_at + self.expires_in

    def entity(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": " ".join(self.scopes),
            "created_at": self.created_at,
        }


@dataclass
class OAuthProvider:
    """The provider's state; :meth:`install` puts its endpoints on the fake's app."""

    fake: GitLabFake
    clock: Callable[[], float] = time.time
    applications: dict[str, OAuthApplication] = field(default_factory=dict)
    grants: dict[str, _Grant] = field(default_factory=dict)
    tokens: dict[str, OAuthToken] = field(default_factory=dict)
    # The GitLab user the browser is signed in as (None: GitLab asks to sign in first).
    signed_in: int | None = None
    # The user clicks "Deny" instead of "Authorize".
    deny: bool = False
    # The query of every /oauth/authorize request and the form of every /oauth/token request
    # (secrets replaced by whether they were given), for tests to look at.
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    # --- set-up ----------------------------------------------------------------------------
    def add_application(
        self,
        *,
        redirect_uri: str,
        scopes: tuple[str, ...] = ("read_user",),
        name: str = "Nakama",
        confidential: bool = True,
    ) -> OAuthApplication:
        app = OAuthApplication(
            name=name,
            client_id=secrets.token_hex(32),
            client_secret=f"gloas-{secrets.token_hex(32)}",
            redirect_uris=tuple(redirect_uri.split()),
            scopes=scopes,
            confidential=confidential,
        )
        with self.fake.lock:
            self.applications[app.client_id] = app
        return app

    def sign_in(self, username: str) -> FakeUser:
        """The browser is signed in to GitLab as ``username`` (a user of the fake)."""
        with self.fake.lock:
            user = next(u for u in self.fake.users.values() if u.username == username)
            self.signed_in = user.id
            return user

    # --- what /api/v4 asks -----------------------------------------------------------------
    def user_for_token(self, token: str) -> FakeUser | None:
        with self.fake.lock:
            found = self.tokens.get(token)
            if found is None or not found.valid(self.clock()):
                return None
            return self.fake.users.get(found.user_id)

    def refusal(self, headers: dict[str, str], method: str, path: str) -> Response | None:
        """GitLab's 403 for an OAuth token whose scopes do not cover this API request."""
        auth = headers.get("authorization", "")
        if auth[:7].lower() != "bearer ":
            return None
        with self.fake.lock:
            found = self.tokens.get(auth[7:].strip())
        if found is None or {"api", "read_api"} & set(found.scopes):
            return None
        reads_user = method in ("GET", "HEAD") and any(
            path == p or path.startswith(p + "/") for p in _READ_USER_PATHS
        )
        if "read_user" in found.scopes and reads_user:
            return None
        return JSONResponse(
            {
                "error": "insufficient_scope",
                "error_description": (
                    "The request requires higher privileges than provided by the access token."
                ),
                "scope": "api read_api",
            },
            status_code=403,
            headers={"WWW-Authenticate": 'Bearer realm="Protected by OAuth 2.0"'},
        )

    # --- endpoints -------------------------------------------------------------------------
    def install(self, app: FastAPI) -> None:
        app.add_route("/oauth/authorize", self._authorize, methods=["GET"])
        app.add_route("/oauth/token", self._token, methods=["POST"])

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        with self.fake.lock:
            self.authorize_requests.append(params)
            return self._decide_authorize(params)

    def _decide_authorize(self, q: dict[str, str]) -> Response:
        app = self.applications.get(q.get("client_id", ""))
        if app is None:
            return _error_page(_INVALID_CLIENT, 401)
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            return _error_page(_INVALID_REDIRECT, 400)
        state = q.get("state")

        def back(**answer: str) -> Response:
            if state is not None:
                answer["state"] = state
            joiner = "&" if urlsplit(redirect_uri).query else "?"
            return RedirectResponse(redirect_uri + joiner + urlencode(answer), status_code=302)

        if q.get("response_type") != "code":
            return back(
                error="unsupported_response_type",
                error_description=("The authorization server does not support this response type."),
            )
        scopes = tuple(q.get("scope", "").split()) or app.scopes
        if not set(scopes) <= set(app.scopes):
            return back(
                error="invalid_scope",
                error_description=("The requested scope is invalid, unknown, or malformed."),
            )
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        if challenge and (method or "plain") not in ("S256", "plain"):
            return back(
                error="invalid_request",
                error_description="The code_challenge_method must be S256 or plain.",
            )
        if not app.confidential and not challenge:
            return back(
                error="invalid_request",
                error_description="Missing required parameter: code_challenge.",
            )
        user = self.fake.users.get(self.signed_in) if self.signed_in is not None else None
        if user is None or user.state != "active":
            # Not signed in (a blocked user is signed out): GitLab's sign-in page first.
            return RedirectResponse(f"{self.fake.url}/users/sign_in", status_code=302)
        if self.deny:
            return back(error="access_denied", error_description=_ACCESS_DENIED)
        grant = _Grant(
            code=secrets.token_hex(32),
            client_id=app.client_id,
            user_id=user.id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            challenge=challenge or None,
            challenge_method=(method or "plain") if challenge else None,
            expires_at=self.clock() + CODE_TTL_S,
        )
        self.grants[grant.code] = grant
        return back(code=grant.code)

    async def _token(self, request: Request) -> Response:
        body = (await request.body()).decode("latin-1")
        form = dict(parse_qsl(body, keep_blank_values=True))
        with self.fake.lock:
            client_id, secret, how = _client_credentials(request.headers, form)
            self.token_requests.append(
                {
                    **{k: v for k, v in form.items() if k not in ("client_secret", "code")},
                    "client_auth": how,
                    "code_given": str(bool(form.get("code"))),
                }
            )
            app = self.applications.get(client_id or "")
            if app is None or not (
                (secret is not None and hmac.compare_digest(secret, app.client_secret))
                or (secret is None and not app.confidential)
            ):
                return _token_error("invalid_client", _INVALID_CLIENT, 401)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                return self._exchange_code(app, form)
            if grant_type == "refresh_token":
                return self._refresh(app, form)
            if not grant_type:
                return _token_error(
                    "invalid_request", "Missing required parameter: grant_type.", 400
                )
            return _token_error(
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                400,
            )

    def _exchange_code(self, app: OAuthApplication, form: dict[str, str]) -> Response:
        code = form.get("code")
        if not code:
            return _token_error("invalid_request", "Missing required parameter: code.", 400)
        grant = self.grants.get(code)
        if grant is None or grant.client_id != app.client_id:
            return _token_error("invalid_grant", _INVALID_GRANT, 400)
        if grant.used:
            # A code used twice was probably stolen: what it bought is revoked (RFC 6749 §4.1.2).
            for token in self.tokens.values():
                if token.code == code:
                    token.revoked = True
            return _token_error("invalid_grant", _INVALID_GRANT, 400)
        if self.clock() >= grant.expires_at or form.get("redirect_uri") != grant.redirect_uri:
            return _token_error("invalid_grant", _INVALID_GRANT, 400)
        if grant.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                return _token_error(
                    "invalid_request", "Missing required parameter: code_verifier.", 400
                )
            if not hmac.compare_digest(
                _challenge(verifier, grant.challenge_method or "plain"), grant.challenge
            ):
                return _token_error("invalid_grant", _INVALID_GRANT, 400)
        grant.used = True
        return self._issue(app, user_id=grant.user_id, scopes=grant.scopes, code=code)

    def _refresh(self, app: OAuthApplication, form: dict[str, str]) -> Response:
        given = form.get("refresh_token")
        if not given:
            return _token_error(
                "invalid_request", "Missing required parameter: refresh_token.", 400
            )
        old = next((t for t in self.tokens.values() if t.refresh_token == given), None)
        if old is None or old.revoked or old.client_id != app.client_id:
            return _token_error("invalid_grant", _INVALID_GRANT, 400)
        old.revoked = True
        return self._issue(app, user_id=old.user_id, scopes=old.scopes, code=old.code)

    def _issue(
        self, app: OAuthApplication, *, user_id: int, scopes: tuple[str, ...], code: str | None
    ) -> Response:
        token = OAuthToken(
            access_token=secrets.token_hex(32),
            refresh_token=secrets.token_hex(32),
            client_id=app.client_id,
            user_id=user_id,
            scopes=scopes,
            created_at=int(self.clock()),
            code=code,
        )
        self.tokens[token.access_token] = token
        return JSONResponse(
            token.entity(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
        )


def _client_credentials(headers: Any, form: dict[str, str]) -> tuple[str | None, str | None, str]:
    """(client id, secret, how it was sent): HTTP Basic first, else the form's fields."""
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None, None, "basic"
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret), "basic"
    if "client_secret" in form:
        return form.get("client_id"), form["client_secret"], "post"
    return form.get("client_id"), None, "none"


def _challenge(verifier: str, method: str) -> str:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return verifier


def _token_error(error: str, description: str, status: int) -> Response:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="Doorkeeper", error="invalid_client"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _error_page(message: str, status: int) -> Response:
    return HTMLResponse(
        f"<!DOCTYPE html><html><body><h3>An error has occurred</h3><p>{message}</p></body></html>",
        status_code=status,
    )
