"""Pydantic models at the boundaries: webhook bodies in, API shapes in and out."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from nakama.names import name_problem

Sha = str


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class EventProject(_Lenient):
    name: str | None = None
    path_with_namespace: str | None = None
    default_branch: str | None = None

    @property
    def project_name(self) -> str:
        """The Nakama project name: the last segment of the GitLab path."""
        path = self.path_with_namespace or self.name or ""
        return path.rsplit("/", 1)[-1].lower()


class EventCommit(_Lenient):
    id: str
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class PushEvent(_Lenient):
    """A GitLab Push Hook or Tag Push Hook body (the fields Nakama reads)."""

    object_kind: Literal["push", "tag_push"]
    before: str = Field(pattern=r"^[0-9a-f]{40}$")
    after: str = Field(pattern=r"^[0-9a-f]{40}$")
    ref: str = Field(min_length=1, max_length=1024)
    checkout_sha: str | None = None
    project: EventProject
    commits: list[EventCommit] = Field(default_factory=list)
    total_commits_count: int = 0


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="DNS-1123 label of at most 40 characters: lower-case a-z, digits and '-'",
        examples=["sales-dashboard"],
    )
    maintainer: str | None = Field(
        default=None,
        description="cluster mode: the GitLab user who becomes the repository's Maintainer",
        pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}$",
        examples=["jsmith"],
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(f"{problem} (a DNS-1123 label such as 'sales-dashboard')")
        return value


class LastPush(BaseModel):
    action: str
    reason: str


class ProjectPublic(BaseModel):
    name: str
    owner: str | None = Field(default=None, description="username of the owner (None: admins')")
    visibility: str = Field(
        default="private",
        description="who may open the app: private (members), internal (signed-in users), "
        "public (anyone)",
    )
    role: str | None = Field(
        default=None, description="the caller's role: owner, developer or viewer (admins: owner)"
    )
    idle_timeout_s: int | None = Field(
        default=None, description="seconds without a request before the app sleeps (None: never)"
    )
    viewers_7d: int = Field(
        default=0, description="distinct signed-in users who opened the app in the last 7 days"
    )
    status: str
    status_message: str | None = None
    clone_url: str
    app_url: str | None
    app_state: str | None = None
    app_detail: str | None = Field(
        default=None,
        description='more on app_state, e.g. "stopped: out of memory (limit 512 MiB)"',
    )
    deployed_commit: str | None
    image_tag: str | None = Field(description="tag of the deployed image or environment")
    last_push: LastPush | None = None
    created_at: datetime
    updated_at: datetime


class ProjectUpdate(BaseModel):
    """A change to a project's settings; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    visibility: Literal["private", "internal", "public"] | None = None
    idle_timeout_s: int | None = Field(
        default=None,
        ge=0,
        le=30 * 24 * 3600,
        description="seconds without a request before the app sleeps; 0 turns sleeping off",
    )


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["owner", "developer", "viewer"] = Field(
        description="owner: everything, sharing and delete included; developer: push, deploy, "
        "pipelines, logs, variables, rollback; viewer: open the app only"
    )


class MemberPublic(BaseModel):
    username: str
    role: str


class PipelinePublic(BaseModel):
    id: int
    project: str
    kind: str
    status: str
    commit: str
    branch: str
    reason: str
    tag: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=40)
    # For web sign-in later; stored as a scrypt hash.
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class UserPublic(BaseModel):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


class UserToken(BaseModel):
    """A new API token: shown once, stored only as a hash."""

    id: int
    username: str
    token: str


# A password's length in characters: at least 8 (short ones are guessed), at most 1024 (a bound
# on what the server hashes).
PASSWORD_MIN, PASSWORD_MAX = 8, 1024


class PasswordSet(BaseModel):
    """A user's new password. Its length is checked by the service
    (:meth:`nakama.auth.TokenStore.set_password`), so that a refusal never echoes it back."""

    model_config = ConfigDict(extra="forbid")

    password: SecretStr = Field(
        description=f"{PASSWORD_MIN} to {PASSWORD_MAX} characters; stored as a scrypt hash",
        json_schema_extra={"minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline_id: int = Field(
        ge=1,
        description="an earlier successful pipeline of the project (see rollback-targets)",
        examples=[12],
    )


class VariableSet(BaseModel):
    """The value of one of a project's environment variables (its name is in the path)."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="at most 32 KiB of UTF-8, no NUL character")
    secret: bool = Field(
        default=False, description="never shown back: the API shows at most its last 2 characters"
    )


class VariablePublic(BaseModel):
    key: str
    secret: bool
    value: str | None = Field(description="the value; None for a secret")
    preview: str | None = Field(
        description='a secret of at least 12 characters: its last 2, such as "…3f"; else None'
    )
    updated_at: datetime
