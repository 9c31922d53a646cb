"""Pydantic models at the boundaries: webhook bodies in, API shapes in and out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from nakama.names import NAME_EXAMPLE, name_problem

Sha = str


def in_utc(moment: datetime) -> datetime:
    """``moment`` with its zone, in UTC: SQLite hands stored times back without one (every one
    of them is UTC), PostgreSQL with the session's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# A time in an API answer: always with its zone, UTC (``2026-12-04T02:09:24.123456Z``), from
# either database.
UtcDatetime = Annotated[datetime, AfterValidator(in_utc)]


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


class ProjectSource(BaseModel):
    """An existing git repository to create the project from, instead of the starter kit."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="the repository's https:// clone URL (http:// only for this machine), "
        "without credentials",
        examples=["https://github.com/acme/sales-dashboard.git"],
    )
    token: SecretStr | None = Field(
        default=None,
        description="for a private repository: a token that may read it; used for the import "
        "only and kept nowhere",
        json_schema_extra={"minLength": 8, "maxLength": 4096},
    )
    username: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[^:\s]+$",
        description="the user name sent with the token (default: the URL's, else 'oauth2'; "
        "GitLab and GitHub take any with an access token)",
    )
    branch: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$",
        description="the branch to deploy (default: the source's default branch, its HEAD)",
        examples=["main"],
    )
    main_file: str | None = Field(
        default=None,
        max_length=255,
        description="the app's script (default: the repository's nakama.toml run command, else "
        "streamlit_app.py or app.py at the root); must exist",
        examples=["streamlit_app.py"],
    )
    python_version: str | None = Field(
        default=None,
        pattern=r"^3\.\d{1,2}$",
        description="the Python version the app needs (default: .python-version where the "
        "builds honour it, else the builds' own); must be the one the builds use",
        examples=["3.12"],
    )

    @field_validator("branch")
    @classmethod
    def _branch_name(cls, value: str | None) -> str | None:
        if value is not None and (
            ".." in value or "//" in value or value.endswith((".", "/", ".lock"))
        ):
            raise ValueError("not a branch name git allows")
        return value

    @field_validator("token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here rather than with min_length, whose error would repeat the value.
        if value is not None and not 8 <= len(value.get_secret_value()) <= 4096:
            raise ValueError("a token has 8 to 4096 characters")
        return value


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

    source: ProjectSource | None = Field(
        default=None,
        description="import an existing git repository instead of starting from the starter kit",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(f"{problem} ({NAME_EXAMPLE})")
        return value


class LastPush(BaseModel):
    action: str
    reason: str


class ProjectPublic(BaseModel):
    # Frozen: the service keeps and hands out the same instances (its caches).
    model_config = ConfigDict(frozen=True)

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
    created_at: UtcDatetime
    updated_at: UtcDatetime


class DetectedFrom(BaseModel):
    """Where each decision of an import came from, in words."""

    branch: str
    main_file: str
    python_version: str


class SourceDetected(BaseModel):
    """What an import found in (or was told about) the repository, and from where."""

    model_config = ConfigDict(populate_by_name=True)

    url: str = Field(description="the source, without credentials")
    commit: str = Field(description="the imported head of the branch: the first deploy's commit")
    branch: str
    main_file: str | None = Field(
        description="the script the app runs (None: nakama.toml's run command is not a "
        "Streamlit one)"
    )
    python_version: str | None = Field(description="major.minor the builds use (None: unknown)")
    from_: DetectedFrom = Field(alias="from", serialization_alias="from")
    notes: list[str] = Field(default_factory=list, description="what else is worth knowing")
    summary: list[str] = Field(
        description='one line per decision, e.g. "main file: streamlit_app.py (found at the root)"'
    )


class ProjectCreated(ProjectPublic):
    """A new project; ``detected`` says what an import decided (None: the starter kit)."""

    detected: SourceDetected | None = None


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
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
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
    created_at: UtcDatetime


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
    updated_at: UtcDatetime
