"""API tokens: random bearer tokens stored only as hashes; one is the bootstrap admin token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from nakama.db.session import Database
from nakama.db.tables import ApiToken


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "nkm_" + secrets.token_urlsafe(32)


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(given.encode(), expected.encode())


class TokenStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, token: str, *, name: str, is_admin: bool) -> None:
        with self._db.session() as s:
            if s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token))) is None:
                s.add(ApiToken(name=name, token_hash=hash_token(token), is_admin=is_admin))

    def has_admin(self) -> bool:
        with self._db.session() as s:
            return s.scalar(select(ApiToken.id).where(ApiToken.is_admin.is_(True))) is not None

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        with self._db.session() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
            if row is None:
                return None
            return Principal(token_id=row.id, name=row.name, is_admin=row.is_admin)
