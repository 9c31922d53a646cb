"""Who is asking for an app, and may they open it: the one decision behind the local gateway and
the cluster's forward-auth verify endpoint.

The viewer is known from an API token (``Authorization: Bearer nkm_…``) or from the app's own
session cookie, which the gateway set on the app's host after a sign-in; nothing else counts.
The headers and cookies that carried them are Nakama's and are removed before a request reaches
an app, and so are any ``X-Forwarded-User``/``-Email`` a client sent: the gateway sets those.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser

from backend.sharing import Sharing
from nakama.access import may_open
from nakama.auth import Principal, TokenStore
from nakama.errors import NotFound
from nakama.sessions import SessionStore

APP_COOKIE = "nakama_app"
# Cookies an app never gets, nor may set: Nakama's own (the UI's session, the app session).
NAKAMA_COOKIE_PREFIXES = ("nakama_", "__host-nakama_", "__secure-nakama_")
IDENTITY_HEADERS = frozenset({b"x-forwarded-user", b"x-forwarded-email"})

Outcome = Literal["allow", "sign-in", "deny", "bad-token", "missing"]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    viewer: Principal | None = None


def app_cookie_name(*, secure: bool) -> str:
    """The app session cookie: ``__Host-`` prefixed under HTTPS, so that it is host-only."""
    return f"__Host-{APP_COOKIE}" if secure else APP_COOKIE


def is_nakama_cookie(name: str) -> bool:
    return name.strip().lower().startswith(NAKAMA_COOKIE_PREFIXES)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer nkm_…`` header (a Nakama API token), else None:
    an app may have its own ``Authorization`` scheme, which passes through."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token.startswith("nkm_") else None


# Seconds a verdict is reused for the same app and credentials. Changes made through this
# process (sharing, visibility, sign-out) apply at once: they move a generation counter that
# every cached verdict is checked against. The bound is for changes made by another process
# (a second replica) and for expiry of sessions.
VERDICT_TTL_S = 2.0
_CACHE_MAX = 10_000
_Key = tuple[str, str | None, str | None]


class Viewers:
    def __init__(self, *, tokens: TokenStore, sessions: SessionStore, sharing: Sharing) -> None:
        self._tokens = tokens
        self._sessions = sessions
        self._sharing = sharing
        self._cache: dict[_Key, tuple[Verdict, float, int]] = {}
        self._pending: dict[_Key, asyncio.Future[Verdict]] = {}

    def _generation(self) -> int:
        return self._sharing.generation + self._sessions.generation

    def _judge(self, app: str, token: str | None, session_id: str | None) -> Verdict:
        """May the holder of ``token`` or ``session_id`` open ``app``? (Blocking.)"""
        viewer: Principal | None = None
        if token is not None:
            viewer = self._tokens.authenticate(token)
            if viewer is None:
                return Verdict("bad-token")
        elif session_id:
            viewer = self._sessions.principal(session_id, app=app)
        try:
            access = self._sharing.access(app, viewer)
        except NotFound:
            return Verdict("missing")
        if may_open(visibility=access.visibility, role=access.role, signed_in=viewer is not None):
            return Verdict("allow", viewer)
        return Verdict("sign-in" if viewer is None else "deny", viewer)

    async def ajudge(self, app: str, *, authorization: str | None, cookie: str | None) -> Verdict:
        """May the sender of these headers open ``app``? From the cache when the same
        credentials were judged just now."""
        token, session_id = credentials(authorization, cookie)
        key = (app, token, session_id)
        now = time.monotonic()
        generation = self._generation()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now and hit[2] == generation:
            return hit[0]
        pending = self._pending.get(key)
        if pending is None:  # one look-up for all the requests that ask the same at once
            pending = asyncio.ensure_future(run_in_threadpool(self._judge, app, token, session_id))
            self._pending[key] = pending
            pending.add_done_callback(lambda _done: self._pending.pop(key, None))
        verdict = await asyncio.shield(pending)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (verdict, now + VERDICT_TTL_S, generation)
        return verdict


def credentials(authorization: str | None, cookie: str | None) -> tuple[str | None, str | None]:
    """(API token, app session id) a request carries; a token, when there is one, decides."""
    token = bearer_token(authorization)
    if token is not None or not cookie:
        return token, None
    cookies = cookie_parser(cookie)
    return None, cookies.get(APP_COOKIE) or cookies.get(f"__Host-{APP_COOKIE}")


def strip_nakama_cookies(cookie: str) -> str | None:
    """The Cookie header without Nakama's cookies (None when nothing is left)."""
    kept = [
        part.strip()
        for part in cookie.split(";")
        if part.strip() and not is_nakama_cookie(part.split("=", 1)[0])
    ]
    return "; ".join(kept) or None


def filter_set_cookie(value: str) -> str | None:
    """An app's Set-Cookie, host-only (its Domain attribute dropped, so it cannot reach
    Nakama's host or another app's); None for one that names a Nakama cookie."""
    name = value.split("=", 1)[0]
    if is_nakama_cookie(name):
        return None
    parts = [p for p in value.split(";")]
    kept = [parts[0]] + [p for p in parts[1:] if not p.strip().lower().startswith("domain=")]
    return ";".join(kept)
