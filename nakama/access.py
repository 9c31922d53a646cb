"""Who may do what with a project: its visibility, its members' roles, and the actions they allow.

Pure rules, decided from values (the caller's role, whether they are signed in, the project's
visibility); the services look those up and ask here. One table serves the API, the pages, the
log streams, git over HTTP and the app gateway, so that a role means the same everywhere.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, get_args

Visibility = Literal["private", "internal", "public"]
RoleName = Literal["owner", "developer", "viewer"]
VISIBILITIES: tuple[str, ...] = get_args(Visibility)
ROLES: tuple[str, ...] = get_args(RoleName)
DEFAULT_VISIBILITY: Visibility = "private"


class Role(IntEnum):
    """A member's role; a higher one allows everything a lower one does."""

    viewer = 10
    developer = 30
    owner = 40


class Action(IntEnum):
    """What a caller wants, by the least role it needs."""

    open_app = Role.viewer  # open the app at its address
    see = Role.viewer  # the project in the list, its page's summary, its members
    develop = Role.developer  # push, clone, pipelines, logs, variables, rollback, restart
    own = Role.owner  # sharing, visibility, sleep, delete


# What a role gives on GitLab (access levels): owner is Maintainer (a repository's owner on GitLab
# can delete it, which must go through Nakama), developer is Developer; viewers get no access.
GITLAB_ACCESS_LEVEL: dict[Role, int | None] = {
    Role.owner: 40,
    Role.developer: 30,
    Role.viewer: None,
}


def role_named(name: str) -> Role:
    """The role called ``name``; ValueError with the choices otherwise."""
    try:
        return Role[name]
    except KeyError:
        raise ValueError(f"unknown role {name[:40]!r}: use one of {', '.join(ROLES)}") from None


def effective_role(*, member: Role | None, is_admin: bool) -> Role | None:
    """Admins are owners of every project; anyone else has their membership's role, if any."""
    return Role.owner if is_admin else member


def allowed(action: Action, *, role: Role | None) -> bool:
    """Whether a member with ``role`` (None: not a member) may do ``action``."""
    return role is not None and role >= action


def may_open(*, visibility: str, role: Role | None, signed_in: bool) -> bool:
    """Whether a caller may open the project's app: anyone for a public app, any signed-in user
    for an internal one, members (and admins, through their role) for a private one."""
    if visibility == "public":
        return True
    if visibility == "internal":
        return signed_in
    return allowed(Action.open_app, role=role)
