"""Web sign-in sessions kept on the server: a random id in the browser's cookie, its hash and
expiry here. Signing out, or the session expiring, ends it for every copy of the cookie."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from nakama.auth import Principal, TokenStore, hash_token
from nakama.db.session import Database
from nakama.db.tables import WebSession, as_utc


def _now() -> datetime:
    return datetime.now(UTC)


class SessionStore:
    def __init__(self, db: Database, tokens: TokenStore, *, max_age_s: int) -> None:
        self._db = db
        self._tokens = tokens
        self._max_age = timedelta(seconds=max_age_s)

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

    def principal(self, session_id: str) -> Principal | None:
        """Who is signed in with ``session_id``, or None (unknown, ended or expired)."""
        with self._db.session() as s:
            row = s.scalar(select(WebSession).where(WebSession.id_hash == hash_token(session_id)))
            if row is None:
                return None
            if as_utc(row.expires_at) <= _now():
                s.delete(row)
                return None
            user_id = row.user_id
        return self._tokens.principal_of_user(user_id)

    def close(self, session_id: str) -> None:
        with self._db.session() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == hash_token(session_id)))

    def close_all(self, user_id: int) -> int:
        """End every session of ``user_id`` (a password change); returns how many."""
        with self._db.session() as s:
            result = s.execute(delete(WebSession).where(WebSession.user_id == user_id))
            return int(getattr(result, "rowcount", 0) or 0)
