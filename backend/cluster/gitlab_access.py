"""What Nakama's GitLab token must reach, and whether it does.

Nakama acts with one token (``NAKAMA_GITLAB__TOKEN``) on three places: the apps' group (Owner:
it creates and deletes the apps' projects and makes their authors Maintainers), the GitOps project
(Maintainer: it commits app manifests to the default branch, which GitLab protects so that only
Maintainers push) and the pipelines project (Maintainer: it reads pipelines and job logs, cancels
them and checks the trigger's pipeline-variables setting; Owner to delete old pipelines).

GitLab answers 404 for a project or group the token's user cannot see, just as for one that does
not exist, and the bot user of a group or project access token can be a member only of the group
or project it was made for (``app/models/member.rb``: "project bots cannot be added to other
groups / projects"). So a group access token works only if the three places are in its group;
otherwise the token must be a personal access token of a user who is a member of each (a
dedicated user, or a service account). :func:`check_access` says, for each place, what the token
cannot reach and how to fix it; the backend logs it at start-up and ``nakama cluster setup
gitlab`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nakama.clients.gitlab import GitLabClient
from nakama.errors import NakamaError, NotFound
from nakama.logs import get_logger
from nakama.settings import Settings

log = get_logger(__name__)

DEVELOPER, MAINTAINER, OWNER = 30, 40, 50
ROLE_NAMES = {10: "Guest", 15: "Planner", 20: "Reporter", 25: "Security Manager"}
ROLE_NAMES |= {30: "Developer", 40: "Maintainer", 50: "Owner"}
GUIDE = "docs/cluster-install.md, section GitLab"


def role_name(level: int) -> str:
    return ROLE_NAMES.get(level, f"access level {level}") if level else "no access"


@dataclass(frozen=True)
class Need:
    """One place the token must reach, with the role it needs there and why."""

    kind: Literal["group", "project"]
    path: str
    role: int
    what: str
    why: str


@dataclass(frozen=True)
class Reach:
    """What the token has at one place: its user's access level there (None: GitLab answers 404
    to it, so it cannot reach it at all)."""

    need: Need
    level: int | None

    @property
    def ok(self) -> bool:
        return self.level is not None and self.level >= self.need.role


@dataclass(frozen=True)
class TokenUser:
    id: int
    username: str
    bot: bool
    admin: bool


def needs(settings: Settings) -> list[Need]:
    gitlab, flux = settings.gitlab, settings.flux
    return [
        Need(
            "group",
            gitlab.group.strip("/"),
            OWNER,
            "the apps' group (NAKAMA_GITLAB__GROUP)",
            "it creates and deletes the apps' projects and adds their maintainers",
        ),
        Need(
            "project",
            flux.gitops_project.strip("/"),
            MAINTAINER,
            "the GitOps project (NAKAMA_FLUX__GITOPS_PROJECT)",
            f"it commits app manifests to {flux.gitops_branch}, a protected branch",
        ),
        Need(
            "project",
            gitlab.pipelines_project.strip("/"),
            MAINTAINER,
            "the pipelines project (NAKAMA_GITLAB__PIPELINES_PROJECT)",
            "it reads, cancels and (as Owner) deletes the apps' pipelines and reads job logs",
        ),
    ]


def token_user(client: GitLabClient) -> TokenUser:
    found: Any = client.call(lambda: client.api.http_get("/user"), what="get the token's user")
    return TokenUser(
        id=int(found["id"]),
        username=str(found["username"]),
        bot=bool(found.get("bot")),
        admin=bool(found.get("is_admin")),
    )


def access_level(client: GitLabClient, need: Need, user: TokenUser) -> int | None:
    """The user's (inherited) access level at ``need``'s place; None when GitLab answers 404."""
    api = client.api
    try:
        if need.kind == "project":
            project: Any = client.call(
                lambda: api.projects.get(need.path), what=f"get project {need.path}"
            )
            if user.admin:
                return OWNER
            permissions = project.attributes.get("permissions") or {}
            levels = [
                int((permissions.get(key) or {}).get("access_level") or 0)
                for key in ("project_access", "group_access")
            ]
            return max(levels)
        group: Any = client.call(lambda: api.groups.get(need.path), what=f"get group {need.path}")
        if user.admin:
            return OWNER
    except NotFound:
        return None
    try:
        member: Any = client.call(
            lambda: group.members_all.get(user.id), what=f"get {user.username} in {need.path}"
        )
    except NotFound:
        return 0  # visible (through something inside it) but no member
    return int(member.access_level)


def reach(client: GitLabClient, settings: Settings) -> tuple[TokenUser, list[Reach]]:
    user = token_user(client)
    return user, [Reach(need, access_level(client, need, user)) for need in needs(settings)]


def describe(user: TokenUser, found: Reach) -> str:
    """One line on what is wrong with ``found`` and how to fix it."""
    need = found.need
    who = f"the token's user {user.username}"
    if found.level is None:
        text = (
            f"{who} cannot reach {need.what} {need.path}: GitLab answers 404 (it does not "
            f"exist, or {user.username} is no member of it)"
        )
        if user.bot:
            text += (
                "; the token is a group or project access token, whose bot user can be a member "
                "of its own group or project only (GitLab refuses to add it anywhere else): put "
                "the apps' group, the GitOps project and the pipelines project under one group "
                "and make the token there, or use a personal access token of a dedicated user "
                f"who is a member of each ({GUIDE})"
            )
        else:
            text += f"; make {user.username} {role_name(need.role)} of it ({GUIDE})"
        return text
    return (
        f"{who} is {role_name(found.level)} of {need.what} {need.path}, which needs "
        f"{role_name(need.role)}: {need.why} ({GUIDE})"
    )


def check_access(client: GitLabClient, settings: Settings) -> list[str]:
    """What the token cannot do, one line each; empty when it reaches everything it needs."""
    user, found = reach(client, settings)
    return [describe(user, r) for r in found if not r.ok]


def log_access(client: GitLabClient, settings: Settings) -> None:
    """The start-up check: each problem logged as a warning (never raised: GitLab may be down
    for a while, and the adapters say the same when they are used)."""
    try:
        problems = check_access(client, settings)
    except NakamaError as exc:
        log.warning("gitlab access not checked", error=str(exc)[:300])
        return
    for problem in problems:
        log.warning("gitlab token cannot do its work", problem=problem)
    if not problems:
        log.info("gitlab access checked", places=len(needs(settings)))
