"""Removing a user (admins only): the projects they alone own go to the admin who removes them,
or are deleted through the projects' normal delete, as that admin chooses; the projects they
share with other owners or are a member of they simply leave; their tokens and sessions end.
The ``admin`` user cannot be removed (the admin token belongs to it)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import delete, func, select, update

from backend.projects import ProjectService
from nakama.access import Role
from nakama.auth import ADMIN_USERNAME, Principal, TokenInfo, TokenStore
from nakama.db.session import Database
from nakama.db.tables import ApiToken, AppViewer, Project, ProjectMember, User, WebSession
from nakama.errors import Conflict, NotFound
from nakama.logs import get_logger
from nakama.models import UtcDatetime
from nakama.sessions import SessionStore

log = get_logger(__name__)

ProjectsChoice = Literal["transfer", "delete"]


class TokenPublic(BaseModel):
    """One API token as listed: never the token itself."""

    id: int
    name: str
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    # The bootstrap admin token (NAKAMA_ADMIN_TOKEN, or the generated one).
    bootstrap: bool

    @classmethod
    def of(cls, token: TokenInfo) -> TokenPublic:
        return cls(
            id=token.id,
            name=token.name,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            bootstrap=token.bootstrap,
        )


class TokenCreate(BaseModel):
    """An optional name for a new token (what it is for: "laptop", "CI")."""

    model_config = {"extra": "forbid"}

    name: str | None = None


class UserRemoved(BaseModel):
    username: str
    # Projects the user alone owned: now the removing admin's, or being deleted.
    transferred: list[str]
    deleted: list[str]
    # Projects the user shared with other owners or was a member of: they left them.
    left: list[str]


@dataclass(frozen=True)
class RemovalPlan:
    transfer: tuple[str, ...]
    delete: tuple[str, ...]
    leave: tuple[str, ...]


def plan_removal(
    username: str, *, owned_alone: list[str], member_of: list[str], choice: ProjectsChoice | None
) -> RemovalPlan:
    """What happens to each project of the user being removed. Projects they alone own need
    the admin's choice: Conflict when it is missing, naming them."""
    alone = tuple(sorted(owned_alone))
    leave = tuple(sorted(set(member_of) - set(alone)))
    if alone and choice is None:
        shown = ", ".join(alone[:10]) + (" …" if len(alone) > 10 else "")
        raise Conflict(
            f"user {username!r} is the only owner of {len(alone)} project(s) ({shown}): "
            "choose projects=transfer (they become yours) or projects=delete"
        )
    if choice == "delete":
        return RemovalPlan(transfer=(), delete=alone, leave=leave)
    return RemovalPlan(transfer=alone, delete=(), leave=leave)


class UserRemoval:
    def __init__(
        self, *, db: Database, tokens: TokenStore, sessions: SessionStore, projects: ProjectService
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._sessions = sessions
        self._projects = projects

    def _holdings(self, user_id: int) -> tuple[list[str], list[str]]:
        """(projects only this user owns, every project they are a member of)."""
        owner = Role.owner.name
        with self._db.session() as s:
            member_of = list(
                s.scalars(
                    select(ProjectMember.project).where(ProjectMember.user_id == user_id)
                ).all()
            )
            others = (
                select(ProjectMember.project, func.count().label("owners"))
                .where(ProjectMember.role == owner, ProjectMember.user_id != user_id)
                .group_by(ProjectMember.project)
                .subquery()
            )
            owned = set(
                s.scalars(
                    select(ProjectMember.project)
                    .outerjoin(others, others.c.project == ProjectMember.project)
                    .where(
                        ProjectMember.user_id == user_id,
                        ProjectMember.role == owner,
                        others.c.owners.is_(None),
                    )
                ).all()
            )
            # Shown as theirs without a membership (made before sharing) and owned by nobody.
            for name in s.scalars(
                select(Project.name)
                .outerjoin(others, others.c.project == Project.name)
                .where(Project.owner_id == user_id, others.c.owners.is_(None))
            ).all():
                owned.add(name)
        return sorted(owned), member_of

    def remove(
        self, username: str, *, projects: ProjectsChoice | None, by: Principal
    ) -> UserRemoved:
        if username == ADMIN_USERNAME:
            raise Conflict("the admin user cannot be removed (the admin token belongs to it)")
        user_id = self._tokens.user_id_of(username)
        if by.user_id == user_id:
            raise Conflict("you cannot remove yourself")
        owned_alone, member_of = self._holdings(user_id)
        plan = plan_removal(username, owned_alone=owned_alone, member_of=member_of, choice=projects)
        sharing = self._projects.sharing
        for name in plan.transfer:
            assert by.username is not None
            try:
                sharing.set_member(name, by.username, Role.owner.name)
            except NotFound:
                continue  # deleted meanwhile
        for name in (*plan.transfer, *plan.leave):
            # Not a member (shown as owner only), or deleted meanwhile: nothing to leave.
            with contextlib.suppress(NotFound):
                sharing.remove_member(name, username)  # the forge's access goes too
        for name in plan.delete:
            self._projects.request_delete(name)
        self._sessions.close_all(user_id)
        with self._db.session() as s:
            # Whatever is left (a project made or shared meanwhile, one being deleted).
            s.execute(update(Project).where(Project.owner_id == user_id).values(owner_id=None))
            for table in (ProjectMember, ApiToken, WebSession, AppViewer):
                s.execute(delete(table).where(table.user_id == user_id))
            s.execute(delete(User).where(User.id == user_id))
        self._sessions.credentials_changed()
        sharing.generation += 1
        log.info(
            "user removed",
            username=username,
            transferred=len(plan.transfer),
            deleted=len(plan.delete),
            left=len(plan.leave),
        )
        return UserRemoved(
            username=username,
            transferred=list(plan.transfer),
            deleted=list(plan.delete),
            left=list(plan.leave),
        )
