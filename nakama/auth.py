"""Users and their API tokens: random bearer tokens stored only as hashes; the bootstrap admin
token belongs to the ``admin`` user. Wrong tokens from one client address are slowed down
(:mod:`nakama.backoff`); a GitLab account is linked by GitLab's immutable user id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from nakama.backoff import Backoff, Rule
from nakama.db.changes import Fresh
from nakama.db.session import Database
from nakama.db.tables import ApiToken, User, as_utc
from nakama.errors import Conflict, InvalidInput, NotFound, RateLimited
from nakama.models import PASSWORD_MAX, PASSWORD_MIN

if TYPE_CHECKING:
    from nakama.settings import WebSettings

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


@dataclass(frozen=True)
class TokenInfo:
    """What is shown of an API token: never the token itself, nor its hash."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    # The bootstrap admin token (NAKAMA_ADMIN_TOKEN or the generated one).
    bootstrap: bool


@dataclass(frozen=True)
class GitLabIdentity:
    """Who GitLab says signed in: the immutable id decides, the username is for display (and
    GitLab's member API); ``created_at`` is when the GitLab account was made (None: unknown)."""

    id: int
    username: str
    created_at: datetime | None = None


# The rule of wrong API tokens per client address (see token_backoff).
WRONG_TOKENS = "token-address"
# last_used_at is written at most this often per token: a write per API call would cost more.
_LAST_USED_EVERY = timedelta(minutes=5)
# Tokens whose principal is kept (the last few thousand callers; all dropped when full).
_KNOWN_KEPT = 4096


@dataclass(frozen=True)
class _Known:
    """A token's principal, and when it was last recorded as used (None: never)."""

    principal: Principal
    last_used: datetime | None


def token_backoff(web: WebSettings) -> Backoff:
    """The back-off of wrong API tokens, from the web settings."""
    rule = Rule(
        free=web.token_failures_per_address,
        initial_s=web.signin_backoff_initial_s,
        max_s=web.signin_backoff_max_s,
    )
    return Backoff({WRONG_TOKENS: rule})


def _now() -> datetime:
    return datetime.now(UTC)


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
    def __init__(self, db: Database, *, failures: Backoff | None = None) -> None:
        """``failures`` slows down wrong tokens per client address (None: not at all)."""
        self._db = db
        self._failures = failures
        # sha256 of a token -> its principal. Fresh while the change counter stays the same:
        # every change to api_tokens and users (a revoke, a removed user, an admin made)
        # moves it, whoever makes it (issue 13: the lookup was most of an API call's time).
        self._known: Fresh[_Known | None] = Fresh(db.changes, kept=_KNOWN_KEPT)

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

    def authenticate(self, token: str, *, client: str | None = None) -> Principal | None:
        """The principal of ``token``, or None. With ``client`` (the caller's address), a wrong
        token counts against that address; past the limit :class:`RateLimited` is raised
        before any token is looked at, so a guesser learns nothing while it waits."""
        if self._failures is None or client is None:
            return self._authenticate(token)
        keys = {WRONG_TOKENS: client}
        wait = self._failures.wait_s(keys)
        if wait > 0:
            raise RateLimited(
                f"too many wrong tokens from your address; try again in {math.ceil(wait)} s "
                "(setting NAKAMA_WEB__TOKEN_FAILURES_PER_ADDRESS)",
                retry_after_s=wait,
            )
        found = self._authenticate(token)
        if found is None:
            self._failures.failed(keys)
        return found

    def _authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        known = self._known.get((digest,), lambda: self._read_token(digest))
        if known is None:
            return None
        now = _now()
        if known.last_used is None or now - known.last_used > _LAST_USED_EVERY:
            # A write, so in the writers' turn; at most once in _LAST_USED_EVERY per token.
            # It moves the counter, so the next call reads the token again (once).
            with self._db.session() as s:
                s.execute(update(ApiToken).where(ApiToken.id == known.principal.token_id).values(
                    last_used_at=now))  # fmt: skip
        return known.principal

    def _read_token(self, digest: str) -> _Known | None:
        with self._db.read() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if row is None:
                return None
            user = s.get(User, row.user_id) if row.user_id is not None else None
            principal = Principal(
                token_id=row.id,
                name=row.name,
                is_admin=row.is_admin or (user is not None and user.is_admin),
                user_id=user.id if user else None,
                username=user.username if user else None,
            )
            last_used = as_utc(row.last_used_at) if row.last_used_at is not None else None
        return _Known(principal=principal, last_used=last_used)

    # --- web sign-in -------------------------------------------------------------------------
    def principal_of_user(self, user_id: int) -> Principal | None:
        """The principal of a signed-in user (None if the user is gone)."""
        with self._db.read() as s:
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

    def new_user_token(self, username: str, *, name: str | None = None) -> tuple[UserInfo, str]:
        """A new API token for ``username``, named ``name`` (default: the username)."""
        token = new_token()
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"user {username[:60]!r} not found")
            s.add(
                ApiToken(
                    name=name or username,
                    token_hash=hash_token(token),
                    is_admin=False,
                    user_id=user.id,
                )
            )
            info = _info(user)
        return info, token

    def user_id_of(self, username: str) -> int:
        with self._db.session() as s:
            user_id = s.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise NotFound(f"user {username[:60]!r} not found")
        return int(user_id)

    def list_tokens(self, username: str) -> list[TokenInfo]:
        """The user's API tokens, oldest first (what they are, never the tokens)."""
        user_id = self.user_id_of(username)
        with self._db.session() as s:
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            ).all()
            return [
                TokenInfo(
                    id=row.id,
                    name=row.name,
                    created_at=row.created_at,
                    last_used_at=row.last_used_at,
                    bootstrap=row.is_admin,
                )
                for row in rows
            ]

    def revoke_token(self, username: str, token_id: int) -> None:
        """Delete one of the user's tokens (NotFound if it is not theirs: ids are not a way to
        find out which tokens others hold)."""
        user_id = self.user_id_of(username)
        with self._db.session() as s:
            gone = s.execute(
                delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id)
            )
            if not getattr(gone, "rowcount", 0):
                raise NotFound(f"user {username[:60]!r} has no token {token_id}")

    def replace_bootstrap_token(self, token: str, *, user_id: int) -> int:
        """Make ``token`` the one bootstrap admin token: add it if missing, revoke every other
        bootstrap token (the one before a rotation of NAKAMA_ADMIN_TOKEN, or a generated one);
        tokens users made for themselves, the admin's too, stay. Returns how many went."""
        hashed = hash_token(token)
        with self._db.session() as s:
            gone = s.execute(
                delete(ApiToken).where(ApiToken.is_admin.is_(True), ApiToken.token_hash != hashed)
            )
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hashed))
            if row is None:
                s.add(ApiToken(name="admin", token_hash=hashed, is_admin=True, user_id=user_id))
            else:
                row.is_admin, row.user_id = True, user_id
            return int(getattr(gone, "rowcount", 0) or 0)

    def set_password(self, username: str, password: str) -> int:
        """Replace the user's password (stored as a scrypt hash); the user's tokens stay valid
        (the caller ends their web sessions). Returns the user's id.

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
            return user.id

    def set_admin(self, username: str, is_admin: bool) -> UserInfo:
        """Make ``username`` an admin or take that away; Conflict for the ``admin`` user (the
        admin token belongs to it) and for the last admin."""
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"user {username[:60]!r} not found")
            if not is_admin and user.is_admin:
                if user.username == ADMIN_USERNAME:
                    raise Conflict("the admin user stays an admin (the admin token belongs to it)")
                others = s.scalar(
                    select(func.count())
                    .select_from(User)
                    .where(User.is_admin.is_(True), User.id != user.id)
                )
                if not others:
                    raise Conflict(f"{username} is the last admin; make another admin first")
            user.is_admin = is_admin
            s.flush()
            return _info(user)

    # --- GitLab sign-in ----------------------------------------------------------------------
    def gitlab_user(self, identity: GitLabIdentity) -> Principal:
        """The user linked to the GitLab account ``identity.id``, made at its first sign-in
        with the first free local username :func:`usernames_for_gitlab` gives; never an admin.

        Only the id links: a GitLab user who renames keeps their account, and whoever takes the
        old name later gets an account of their own. A link made by username before ids were
        stored (migration 0009) is claimed by the first sign-in with that username whose GitLab
        account is older than the local user (the account that linked existed when it did; a
        name registered again later is newer). From then on only the id counts."""
        for _attempt in range(_LINK_ATTEMPTS):
            try:
                user_id = self._link(identity)
            except IntegrityError:  # a concurrent sign-in took the name or made the link
                continue
            principal = self.principal_of_user(user_id)
            if principal is not None:
                return principal
        raise Conflict(f"no local user could be made for GitLab user {identity.username[:60]!r}")

    def gitlab_username_of(self, user_id: int) -> str | None:
        """The GitLab account the user signs in with (None: none linked)."""
        with self._db.session() as s:
            return s.scalar(select(User.gitlab_username).where(User.id == user_id))

    def gitlab_username_for(self, username: str) -> str | None:
        """The GitLab account of the local user ``username`` (None: none linked)."""
        with self._db.session() as s:
            return s.scalar(select(User.gitlab_username).where(User.username == username))

    def _link(self, identity: GitLabIdentity) -> int:
        with self._db.session() as s:
            user = s.scalar(select(User).where(User.gitlab_id == identity.id))
            if user is None:
                user = _legacy_link(s, identity)
            # GitLab usernames are unique (regardless of case) at any one time: another row
            # with this name is of an account that has renamed since (it gets its new name at
            # its next sign-in), or a link by name that this account may not claim.
            release = update(User).where(
                func.lower(User.gitlab_username) == identity.username.lower()
            )
            if user is not None:
                release = release.where(User.id != user.id)
            s.execute(
                release.values(gitlab_username=None).execution_options(synchronize_session=False)
            )
            if user is None:
                for username in usernames_for_gitlab(identity.username):
                    if s.scalar(select(User.id).where(User.username == username)) is None:
                        break
                user = User(username=username, is_admin=False)
                s.add(user)
            user.gitlab_id, user.gitlab_username = identity.id, identity.username
            s.flush()
            return user.id


def _legacy_link(s: Any, identity: GitLabIdentity) -> User | None:
    """The user linked by username alone (before migration 0009) that ``identity`` may claim:
    only if its GitLab account was made before that local user was."""
    same_name = func.lower(User.gitlab_username) == identity.username.lower()
    user = s.scalar(select(User).where(same_name, User.gitlab_id.is_(None)))
    if user is None or identity.created_at is None:
        return None
    return user if as_utc(identity.created_at) < as_utc(user.created_at) else None


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
