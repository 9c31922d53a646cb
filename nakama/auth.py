"""Users and their API tokens: random bearer tokens stored only as hashes; the bootstrap admin
token belongs to the ``admin`` user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from nakama.db.session import Database
from nakama.db.tables import ApiToken, User
from nakama.errors import Conflict, InvalidInput, NotFound
from nakama.models import PASSWORD_MAX, PASSWORD_MIN

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


# A hash of a random password: checked against when the user does not exist.
_DUMMY_HASH = "scrypt$16384$8$1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43


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

    # --- web sign-in -------------------------------------------------------------------------
    def principal_of_user(self, user_id: int) -> Principal | None:
        """The principal of a signed-in user (None if the user is gone)."""
        with self._db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                return None
            return Principal(
                token_id=0,
                name=user.username,
                is_admin=user.is_admin,
                user_id=user.id,
                username=user.username,
            )

    def sign_in(self, username: str, secret: str) -> Principal | None:
        """The user's principal if ``secret`` is their password or one of their API tokens
        (the admin, made without a password, signs in with the printed admin token)."""
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                # Spend the same time as a wrong password, so a probe cannot tell the two apart.
                verify_password(secret, _DUMMY_HASH)
                return None
            user_id, password_hash = user.id, user.password_hash
            token = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
            by_token = token is not None and token.user_id == user_id
        if by_token or verify_password(secret, password_hash):
            return self.principal_of_user(user_id)
        return None

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

    def set_password(self, username: str, password: str) -> None:
        """Replace the user's password (stored as a scrypt hash); the user's tokens stay valid.

        Neither the password nor its length is ever put into an error message.
        """
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise InvalidInput(
                f"a password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
            )
        hashed = hash_password(password)  # outside the transaction: it takes ~50 ms
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"user {username[:60]!r} not found")
            user.password_hash = hashed

    # --- GitLab sign-in ----------------------------------------------------------------------
    def gitlab_user(self, gitlab_username: str) -> Principal:
        """The user linked to the GitLab account ``gitlab_username``, made at its first sign-in
        with the first free local username :func:`usernames_for_gitlab` gives; never an admin."""
        for _attempt in range(_LINK_ATTEMPTS):
            user_id = self._linked_user(gitlab_username)
            if user_id is None:
                try:
                    user_id = self._link_new_user(gitlab_username)
                except IntegrityError:  # a concurrent sign-in took the name or made the link
                    continue
            principal = self.principal_of_user(user_id)
            if principal is not None:
                return principal
        raise Conflict(f"no local user could be made for GitLab user {gitlab_username[:60]!r}")

    def gitlab_username_of(self, user_id: int) -> str | None:
        """The GitLab account the user signs in with (None: none linked)."""
        with self._db.session() as s:
            return s.scalar(select(User.gitlab_username).where(User.id == user_id))

    def gitlab_username_for(self, username: str) -> str | None:
        """The GitLab account of the local user ``username`` (None: none linked)."""
        with self._db.session() as s:
            return s.scalar(select(User.gitlab_username).where(User.username == username))

    def _linked_user(self, gitlab_username: str) -> int | None:
        # GitLab usernames are unique regardless of case.
        wanted = func.lower(User.gitlab_username) == gitlab_username.lower()
        with self._db.session() as s:
            return s.scalar(select(User.id).where(wanted))

    def _link_new_user(self, gitlab_username: str) -> int:
        with self._db.session() as s:
            for username in usernames_for_gitlab(gitlab_username):
                if s.scalar(select(User.id).where(User.username == username)) is None:
                    break
            user = User(username=username, gitlab_username=gitlab_username, is_admin=False)
            s.add(user)
            s.flush()
            return user.id


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id, username=user.username, is_admin=user.is_admin, created_at=user.created_at
    )


# Tries at linking a GitLab user while concurrent sign-ins take the same names.
_LINK_ATTEMPTS = 5


def usernames_for_gitlab(gitlab_username: str) -> Iterator[str]:
    """Local usernames for a GitLab user, best first: its GitLab username in our rules
    (lower-case, other characters as '-', starting with a letter, at most 40 characters), then
    the same with -2, -3 … appended."""
    base = re.sub(r"[^a-z0-9_-]+", "-", gitlab_username.lower()).strip("-")
    if not base:
        base = "gitlab-user"
    elif not base[0].isalpha():
        base = f"gl-{base}"
    yield validate_username(base[:40].rstrip("-"))
    number = 2
    while True:
        suffix = f"-{number}"
        yield validate_username(base[: 40 - len(suffix)].rstrip("-") + suffix)
        number += 1
