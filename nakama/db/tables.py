"""The tables. One row per user, project, webhook event, push plan, pipeline, API token and
project variable."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time with its zone: SQLite gives back naive datetimes, and every one is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    # "scrypt$n$r$p$salt$hash" (see nakama.auth.hash_password); None: no web sign-in.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The GitLab account this user signs in with (None: none linked).
    gitlab_username: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    # GitLab's immutable user id of that account: the link (the username is for display and
    # GitLab's member API, and follows renames at each sign-in).
    gitlab_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 of the token; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # The user the token acts for (None: a token from before users existed).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_api_tokens_user_id_users"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When it last authenticated, to a few minutes (None: never since migration 0009).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    branch: Mapped[str] = mapped_column(String(255))
    hook_token: Mapped[str] = mapped_column(String(100))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deployed_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deployed_tag: Mapped[str | None] = mapped_column(String(160), nullable=True)
    deployed_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_action: Mapped[str | None] = mapped_column(String(20), nullable=True)
    last_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who may see and change it besides admins (None: made before users existed; admins only).
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="fk_projects_owner_id_users"), nullable=True
    )
    # Who may open the app: "private" (members), "internal" (signed-in users), "public" (anyone).
    visibility: Mapped[str] = mapped_column(String(20), default="private", server_default="private")
    # Seconds without a request after which the app is stopped until the next one (None: never).
    idle_timeout_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # An admin's overrides of the default limits (nakama.limits.LimitOverrides; None: none).
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Where an imported project's code came from, without credentials (None: the starter kit).
    source_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # The script the app runs when the repository's nakama.toml does not say (None: app.py).
    main_file: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ProjectMember(Base):
    """A user's role in a project ("owner", "developer" or "viewer"); admins need none."""

    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", name="fk_project_members_user_id_users", ondelete="CASCADE"),
        index=True,
    )
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AppSignInCode(Base):
    """A one-time code that carries a signed-in user from Nakama's host to an app's host, where
    the gateway exchanges it (once, before it expires) for that app's own session cookie."""

    __tablename__ = "app_sign_in_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(40))
    # The web session it was made from: the app session ends with it.
    session_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AppViewer(Base):
    """A signed-in user who opened an app on a day (UTC): the project page's viewer count."""

    __tablename__ = "app_viewers"
    __table_args__ = (UniqueConstraint("project", "user_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[int] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(40))
    # endpoint + ':' + Idempotency-Key (or X-Gitlab-Event-UUID); duplicates are dropped on it.
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    event_kind: Mapped[str] = mapped_column(String(60))
    project: Mapped[str] = mapped_column(String(40), index=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PushPlan(Base):
    """One decision per (project, before, after): both hooks of one push share it."""

    __tablename__ = "push_plans"
    __table_args__ = (UniqueConstraint("project", "before", "after"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    ref: Mapped[str] = mapped_column(String(255))
    before: Mapped[str] = mapped_column(String(64))
    after: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Pipeline(Base):
    """A build or reload of one commit of one project."""

    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    commit_sha: Mapped[str] = mapped_column(String(64))
    branch: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    dep_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tag: Mapped[str | None] = mapped_column(String(160), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The pipeline's id where it runs, when that is not here (cluster mode: GitLab's pipeline id).
    external_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the project's notification targets were told of its end (None: not yet, or not
    # finished); pipelines from before migration 0012 count as told.
    notified_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


class NotificationTarget(Base):
    """Where a project's pipeline failures (and, if asked, deploys) are sent. The URL and the
    signing secret are stored encrypted (SecretBox) and never shown back whole."""

    __tablename__ = "notification_targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # webhook, slack
    url: Mapped[str] = mapped_column(Text)
    # The webhook kind's HMAC key (None for slack, whose URL is its secret).
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    on_deploy: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AppDatabase(Base):
    """A project's PostgreSQL database on the operator's server (backend.databases): a NOLOGIN
    role owning it, and the login role the app connects as, whose password is stored encrypted.
    A rotation makes the next login role and drops the one before (``old_login_role`` until it
    is gone). ``state``: creating (undone at the next start), ready, deleting (finished then)."""

    __tablename__ = "app_databases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), unique=True)
    database: Mapped[str] = mapped_column(String(63))
    owner_role: Mapped[str] = mapped_column(String(63))
    login_role: Mapped[str] = mapped_column(String(63))
    old_login_role: Mapped[str | None] = mapped_column(String(63), nullable=True)
    password: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ProjectVariable(Base):
    """One environment variable of a project's app; ``secret`` ones are never shown back."""

    __tablename__ = "project_variables"
    __table_args__ = (UniqueConstraint("project", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(40), index=True)
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    secret: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class WebSession(Base):
    """A signed-in browser. The cookie holds a random id; only its hash is stored, and signing
    out deletes the row, so a copied cookie is worthless afterwards."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # An app's own session (the project's name), made from the web session ``parent_hash``;
    # None for a session of Nakama's own pages.
    app: Mapped[str | None] = mapped_column(String(40), nullable=True)
    parent_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", name="fk_web_sessions_user_id_users", ondelete="CASCADE"),
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ChangeCounter(Base):
    """One row whose ``n`` grows in the same transaction as every change to the tables that
    project lists, access checks and sign-ins read (:data:`nakama.db.changes.WATCHED`), by
    triggers in the database itself, so that writes of any process (a second Nakama, the CLI)
    count. A cache keyed on ``n`` is fresh (:mod:`nakama.db.changes`)."""

    __tablename__ = "change_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
