"""Web sessions and CSRF protection.

A session is a signed cookie (Starlette's SessionMiddleware) holding a random session id, whose
hash and expiry the server keeps (:mod:`nakama.sessions`), and a random CSRF token. Every unsafe
request must carry that token, in the form field ``csrf_token`` or the ``X-CSRF-Token`` header
(htmx sends it), and, when the browser says where it came from, come from this site."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request

from nakama.auth import Principal
from nakama.sessions import SessionStore
from nakama.settings import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_COOKIE = "nakama_session"


class SignInRequired(Exception):
    """The request needs a signed-in user; the web layer answers with a way to the sign-in."""


class CsrfRejected(Exception):
    """An unsafe request without this session's CSRF token, or from another site."""


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the configured one, or one made once and kept in the
    data directory (0600) so sign-ins survive a restart."""
    if settings.web.session_secret is not None:
        return settings.web.session_secret.get_secret_value()
    path: Path = settings.data_dir / "session-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def start_session(request: Request, principal: Principal, sessions: SessionStore) -> None:
    """Sign ``principal`` in with a new session and CSRF token: nothing from before carries over."""
    end_session(request, sessions)
    assert principal.user_id is not None
    request.session["sid"] = sessions.open(principal.user_id)
    csrf_token(request)


def end_session(request: Request, sessions: SessionStore) -> None:
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        sessions.close(session_id)
    request.session.clear()


def signed_in(request: Request, sessions: SessionStore) -> Principal | None:
    session_id = request.session.get("sid")
    if not isinstance(session_id, str):
        return None
    principal = sessions.principal(session_id)
    if principal is None:
        request.session.clear()
    return principal


async def check_csrf(request: Request, *, allowed_origins: set[str]) -> None:
    """Raise :class:`CsrfRejected` unless ``request`` carries this session's CSRF token and,
    when it names its origin, comes from one of ``allowed_origins``."""
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") not in allowed_origins:
        raise CsrfRejected("cross-site request")
    expected = request.session.get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not given:
        raise CsrfRejected("missing CSRF token")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRejected("wrong CSRF token")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(*, apps: str | None = None) -> dict[str, str]:
    """The headers every page gets. ``apps`` is the source expression of the apps' hosts
    (``http://*.localhost:8000``): the sign-in form's redirects end on an app's host, and a
    form's redirects are held to ``form-action`` too."""
    form_action = "'self'" + (f" {apps}" if apps else "")
    return {
        # Scripts and styles only from this server: no inline code, so injected markup cannot run.
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            f"form-action {form_action}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
    }


def apps_source(base_url: str, apps_domain: str) -> str:
    """The CSP source expression that matches every app's address."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://*.{apps_domain.strip('.')}{port}"
