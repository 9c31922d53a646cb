"""Web sign-in sessions kept on the server: a random id in the browser's cookie, its hash and
expiry here. Signing out, or the session expiring, ends it for every copy of the cookie.

An app's own session (the cookie the gateway sets on the app's host) is a row of the same kind
tied to one app and to the web session it came from: signing out of Nakama ends it too. It is
made from a one-time code (:meth:`SessionStore.issue_app_code`), which carries the sign-in from
Nakama's host to the app's host without the session id ever leaving Nakama's."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from nakama.auth import Principal, TokenStore, hash_token
from nakama.db.changes import Fresh
from nakama.db.session import Database
from nakama.db.tables import AppSignInCode, WebSession, as_utc


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Signed:
    """A session as stored: when it expires, and who it signs in (None: the user is gone)."""

    expires_at: datetime
    principal: Principal | None


class SessionStore:
    def __init__(self, db: Database, tokens: TokenStore, *, max_age_s: int) -> None:
        self._db = db
        self._tokens = tokens
        self._max_age = timedelta(seconds=max_age_s)
        # Moves whenever sessions end: cached sign-in checks made before it are stale.
        self.generation = 0
        # (session hash, app) -> the session: every page and app request reads one (issue 13).
        # Fresh while the change counter stays (web_sessions and users are watched).
        self._signed: Fresh[_Signed | None] = Fresh(db.changes, kept=4096)

    def open(self, user_id: int) -> str:
        """A new session for ``user_id``; returns its id (goes only into the signed cookie)."""
        session_id = secrets.token_urlsafe(32)
        now = _now()
        with self._db.session() as s:
            s.execute(delete(WebSession).where(WebSession.expires_at < now))
            s.add(
                WebSession(
                    id_hash=hash_token(session_id),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + self._max_age,
                )
            )
        return session_id

    def principal(self, session_id: str, *, app: str | None = None) -> Principal | None:
        """Who is signed in with ``session_id``, or None (unknown, ended or expired); with
        ``app``, the session must be that app's own (else it must be one of Nakama's pages)."""
        id_hash = hash_token(session_id)
        signed = self._signed.get((id_hash, app), lambda: self._read(id_hash, app))
        if signed is None:
            return None
        if signed.expires_at <= _now():
            with self._db.session() as s:
                s.execute(delete(WebSession).where(WebSession.id_hash == id_hash))
            return None
        return signed.principal

    def _read(self, id_hash: str, app: str | None) -> _Signed | None:
        with self._db.read() as s:
            row = s.scalar(select(WebSession).where(WebSession.id_hash == id_hash))
            if row is None or row.app != app:
                return None
            expires_at, user_id = as_utc(row.expires_at), row.user_id
        return _Signed(expires_at, self._tokens.principal_of_user(user_id))

    def close(self, session_id: str) -> None:
        """End the session and the app sessions made from it."""
        hashed = hash_token(session_id)
        with self._db.session() as s:
            s.execute(delete(WebSession).where(WebSession.parent_hash == hashed))
            s.execute(delete(AppSignInCode).where(AppSignInCode.session_hash == hashed))
            s.execute(delete(WebSession).where(WebSession.id_hash == hashed))
        self.generation += 1  # after the commit: a check made before it is stale now

    # --- app sessions ----------------------------------------------------------------------
    def issue_app_code(self, session_id: str, *, app: str, ttl_s: float) -> str:
        """A one-time code for signing the holder of web session ``session_id`` in to ``app``."""
        code = secrets.token_urlsafe(32)
        now = _now()
        with self._db.session() as s:
            s.execute(delete(AppSignInCode).where(AppSignInCode.expires_at < now))
            s.add(
                AppSignInCode(
                    code_hash=hash_token(code),
                    project=app,
                    session_hash=hash_token(session_id),
                    expires_at=now + timedelta(seconds=ttl_s),
                )
            )
        return code

    def redeem_app_code(self, code: str, *, app: str) -> str | None:
        """Use ``code`` up (once, before it expires, for the app it was made for) and open that
        app's session; returns its id, or None for a forged, expired, replayed or foreign code.
        """
        now = _now()
        with self._db.session() as s:
            row = s.scalar(select(AppSignInCode).where(AppSignInCode.code_hash == hash_token(code)))
            if row is None:
                return None
            # Deleted first, whatever follows: a code works once, even when it fails.
            taken = s.execute(delete(AppSignInCode).where(AppSignInCode.code_hash == row.code_hash))
            if getattr(taken, "rowcount", 0) != 1:
                return None  # a concurrent redeem took it
            if row.project != app or as_utc(row.expires_at) <= now:
                return None
            parent = s.scalar(
                select(WebSession).where(
                    WebSession.id_hash == row.session_hash, WebSession.app.is_(None)
                )
            )
            if parent is None or as_utc(parent.expires_at) <= now:
                return None
            session_id = secrets.token_urlsafe(32)
            s.add(
                WebSession(
                    id_hash=hash_token(session_id),
                    user_id=parent.user_id,
                    app=app,
                    parent_hash=parent.id_hash,
                    created_at=now,
                    expires_at=as_utc(parent.expires_at),
                )
            )
        return session_id

    def close_all(self, user_id: int, *, keep: str | None = None) -> int:
        """End every session of ``user_id`` (a password change, the user's removal), their
        apps' sessions too, except the web session ``keep`` (the one that made the change) and
        the app sessions made from it; returns how many ended."""
        kept = hash_token(keep) if keep is not None else None
        with self._db.session() as s:
            ending = delete(WebSession).where(WebSession.user_id == user_id)
            if kept is not None:
                ending = ending.where(
                    WebSession.id_hash != kept,
                    (WebSession.parent_hash.is_(None)) | (WebSession.parent_hash != kept),
                )
            result = s.execute(ending)
            ended = int(getattr(result, "rowcount", 0) or 0)
        self.generation += 1
        return ended

    def credentials_changed(self) -> None:
        """A token was revoked: sign-in checks cached before now are stale."""
        self.generation += 1
