"""Users and their API tokens: random bearer tokens stored only as hashes; the bootstrap admin
token belongs to the ``admin`` user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from nakama.db.session import Database
from nakama.db.tables import ApiToken, Project, User
from nakama.errors import Conflict, InvalidInput, NotFound

ADMIN_USERNAME = "admin"
_USERNAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB of memory per hash.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    is_admin: bool
    # The user the token acts for; None for a token from before users existed.
    user_id: int | None = None
    username: str | None = None

    def may_see(self, owner_id: int | None) -> bool:
        """Admins see every project; a user only the projects they own."""
        return self.is_admin or (self.user_id is not None and owner_id == self.user_id)


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    is_admin: bool
    created_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: ``scrypt$<n>$<r>$<p>$<salt>$<hash>``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        given = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


def validate_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise InvalidInput(
            f"invalid username {username[:60]!r}: use 1-40 characters, lower-case a-z, digits, "
            "'-' and '_', starting with a letter"
        )
    return username


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

    def add(self, token: str, *, name: str, is_admin: bool, user_id: int | None = None) -> None:
        with self._db.session() as s:
            if s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token))) is None:
                s.add(
                    ApiToken(
                        name=name, token_hash=hash_token(token), is_admin=is_admin, user_id=user_id
                    )
                )

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
            user = s.get(User, row.user_id) if row.user_id is not None else None
            return Principal(
                token_id=row.id,
                name=row.name,
                is_admin=row.is_admin or (user is not None and user.is_admin),
                user_id=user.id if user else None,
                username=user.username if user else None,
            )

    def may_access_project(self, token: str, project: str) -> bool:
        """Whether ``token`` may see ``project`` (git over HTTP: clone and push)."""
        principal = self.authenticate(token)
        if principal is None:
            return False
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
        return row is not None and principal.may_see(row.owner_id)

    # --- users -----------------------------------------------------------------------------
    def ensure_admin_user(self) -> int:
        """The ``admin`` user's id (made if missing); admin tokens without a user join it."""
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == ADMIN_USERNAME))
            if user is None:
                user = User(username=ADMIN_USERNAME, is_admin=True)
                s.add(user)
                s.flush()
            s.execute(
                update(ApiToken)
                .where(ApiToken.is_admin.is_(True), ApiToken.user_id.is_(None))
                .values(user_id=user.id)
            )
            return user.id

    def create_user(self, username: str, password: str | None = None) -> tuple[UserInfo, str]:
        """Make a user and a first API token for it; return both (the token is shown once)."""
        username = validate_username(username)
        token = new_token()
        try:
            with self._db.session() as s:
                if s.scalar(select(User.id).where(User.username == username)) is not None:
                    raise Conflict(f"user {username!r} already exists")
                user = User(
                    username=username,
                    password_hash=hash_password(password) if password else None,
                    is_admin=False,
                )
                s.add(user)
                s.flush()
                s.add(
                    ApiToken(
                        name=username, token_hash=hash_token(token), is_admin=False, user_id=user.id
                    )
                )
                s.flush()
                info = _info(user)
        except IntegrityError as exc:  # a concurrent create of the same name
            raise Conflict(f"user {username!r} already exists") from exc
        return info, token

    def list_users(self) -> list[UserInfo]:
        with self._db.session() as s:
            return [_info(u) for u in s.scalars(select(User).order_by(User.username)).all()]

    def new_user_token(self, username: str) -> tuple[UserInfo, str]:
        token = new_token()
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"user {username!r} not found")
            s.add(
                ApiToken(
                    name=username,
                    token_hash=hash_token(token),
                    is_admin=False,
                    user_id=user.id,
                )
            )
            info = _info(user)
        return info, token


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
    )
