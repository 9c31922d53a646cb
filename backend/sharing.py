"""Sharing: a project's members and their roles, its visibility, and the one check every entry
point (API, pages, log streams, git over HTTP, the app gateway) makes before it acts.

A caller who is not a member (and not an admin) is answered as if the project did not exist;
a member whose role is too low is told what role the action needs. The project's last owner
cannot be removed or demoted, so that somebody besides the admins can always manage it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nakama.access import (
    VISIBILITIES,
    Action,
    Role,
    effective_role,
    may_open,
    role_named,
)
from nakama.auth import Principal
from nakama.db.changes import Fresh
from nakama.db.session import Database
from nakama.db.tables import Project, ProjectMember, User
from nakama.errors import Conflict, Forbidden, InvalidInput, NotFound
from nakama.logs import get_logger

log = get_logger(__name__)

# Called with (project, username, new role or None when removed) before a change is stored:
# cluster mode keeps the repository's GitLab members in step.
MemberChanged = Callable[[str, str, Role | None], None]


@dataclass(frozen=True)
class Member:
    username: str
    role: Role


@dataclass(frozen=True)
class Access:
    """What one caller may do with one project."""

    visibility: str
    role: Role | None  # the caller's role; admins are owners

    def allows(self, action: Action) -> bool:
        return self.role is not None and self.role >= action


def _not_found(project: str) -> NotFound:
    return NotFound(f"project {project!r} not found")


class Sharing:
    def __init__(
        self,
        db: Database,
        *,
        on_member_change: MemberChanged | None = None,
        on_visibility_change: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_member_change`` runs before a membership change is stored (a failure stores
        nothing); ``on_visibility_change(project, visibility)`` after a visibility is stored."""
        self._db = db
        self._changed = on_member_change
        self._visibility_changed = on_visibility_change
        # Moves on every change of members or visibility: cached access decisions made
        # before it are stale.
        self.generation = 0
        # (project, user, admin) -> Access: every API call and page checks one (issue 13).
        self._access: Fresh[Access] = Fresh(db.changes, kept=4096)

    # --- reads -----------------------------------------------------------------------------
    def access(self, project: str, caller: Principal | None) -> Access:
        """The caller's access to ``project`` (NotFound if it does not exist). Kept while
        the database's change counter stays the same (projects and members are watched)."""
        user = caller.user_id if caller is not None else None
        admin = caller is not None and caller.is_admin
        return self._access.get((project, user, admin), lambda: self._read_access(project, caller))

    def _read_access(self, project: str, caller: Principal | None) -> Access:
        with self._db.read() as s:
            visibility = s.scalar(select(Project.visibility).where(Project.name == project))
            if visibility is None:
                raise _not_found(project)
            member = None
            if caller is not None and caller.user_id is not None and not caller.is_admin:
                member = s.scalar(
                    select(ProjectMember.role).where(
                        ProjectMember.project == project, ProjectMember.user_id == caller.user_id
                    )
                )
        role = effective_role(
            member=Role[member] if member else None,
            is_admin=caller is not None and caller.is_admin,
        )
        return Access(visibility=visibility, role=role)

    def check(self, project: str, caller: Principal, action: Action) -> Access:
        """``caller``'s access if it allows ``action``: NotFound for a non-member (another's
        project is as if missing), Forbidden for a member whose role is too low."""
        found = self.access(project, caller)
        if found.role is None:
            raise _not_found(project)
        if not found.allows(action):
            raise Forbidden(
                f"your role in project {project!r} is {found.role.name}; "
                f"this needs {Role(action.value).name} or higher"
            )
        return found

    def may_open(self, project: str, caller: Principal | None) -> bool:
        """Whether ``caller`` (None: nobody signed in) may open the project's app."""
        found = self.access(project, caller)
        return may_open(visibility=found.visibility, role=found.role, signed_in=caller is not None)

    def roles_of(self, user_id: int | None) -> dict[str, Role]:
        """The projects ``user_id`` is a member of, with the role in each."""
        if user_id is None:
            return {}
        with self._db.read() as s:
            rows = s.execute(
                select(ProjectMember.project, ProjectMember.role).where(
                    ProjectMember.user_id == user_id
                )
            ).all()
        return {project: Role[role] for project, role in rows}

    def members(self, project: str) -> list[Member]:
        with self._db.read() as s:
            rows = s.execute(
                select(User.username, ProjectMember.role)
                .join(User, User.id == ProjectMember.user_id)
                .where(ProjectMember.project == project)
                .order_by(User.username)
            ).all()
        return [Member(username=u, role=Role[r]) for u, r in rows]

    # --- changes ---------------------------------------------------------------------------
    def add_owner(self, project: str, user_id: int) -> None:
        """Make ``user_id`` the owner of the project they just created."""
        with self._db.session() as s:
            s.add(ProjectMember(project=project, user_id=user_id, role=Role.owner.name))

    def set_member(self, project: str, username: str, role_name: str) -> Member:
        """Give ``username`` the role ``role_name`` in ``project`` (added if not a member)."""
        try:
            role = role_named(role_name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        with self._db.session() as s:
            user_id = self._user_id(s, username)
            previous = self._role_of(s, project, user_id)
            if previous == Role.owner and role != Role.owner:
                self._keep_an_owner(s, project)  # early, before the forge is changed
        self._before_change(project, username, role)
        try:
            with self._db.session() as s:
                self._lock_project(s, project)
                row = s.scalar(
                    select(ProjectMember).where(
                        ProjectMember.project == project, ProjectMember.user_id == user_id
                    )
                )
                if row is None:
                    s.add(ProjectMember(project=project, user_id=user_id, role=role.name))
                else:
                    row.role = role.name
                s.flush()
                self._still_owned(s, project, leaving=user_id if role != Role.owner else None)
        except IntegrityError as exc:  # a concurrent add of the same member
            self._before_change(project, username, previous)
            raise Conflict(f"{username!r} was added to {project!r} at the same time") from exc
        except Conflict:
            self._before_change(project, username, previous)  # the forge as it was
            raise
        self.generation += 1
        log.info("member set", project=project, member=username, role=role.name)
        return Member(username=username, role=role)

    def remove_member(self, project: str, username: str) -> None:
        """Take ``username`` out of ``project`` (NotFound if not a member)."""
        with self._db.session() as s:
            user_id = self._user_id(s, username)
            previous = self._role_of(s, project, user_id)
            if previous is None:
                raise NotFound(f"{username!r} is not a member of project {project!r}")
            if previous == Role.owner:
                self._keep_an_owner(s, project)
        self._before_change(project, username, None)
        try:
            with self._db.session() as s:
                self._lock_project(s, project)
                s.execute(
                    delete(ProjectMember).where(
                        ProjectMember.project == project, ProjectMember.user_id == user_id
                    )
                )
                self._still_owned(s, project, leaving=user_id)
        except Conflict:
            self._before_change(project, username, previous)
            raise
        self.generation += 1
        log.info("member removed", project=project, member=username)

    @staticmethod
    def _lock_project(s: Session, project: str) -> None:
        """Serialise membership changes of one project (PostgreSQL: a row lock; SQLite holds
        one writer at a time anyway), so that two owners stepping down at once cannot both."""
        if s.scalar(select(Project.id).where(Project.name == project).with_for_update()) is None:
            raise _not_found(project)

    @classmethod
    def _still_owned(cls, s: Session, project: str, *, leaving: int | None) -> None:
        """After a change, in its transaction: Conflict (so it is rolled back) if the project
        has no owner left; if ``leaving`` was the owner shown for the project, another owner
        is shown from now on."""
        cls._keep_an_owner(s, project, at_least=1)
        row = s.scalar(select(Project).where(Project.name == project))
        if row is not None and leaving is not None and row.owner_id == leaving:
            row.owner_id = s.scalar(
                select(ProjectMember.user_id)
                .where(ProjectMember.project == project, ProjectMember.role == Role.owner.name)
                .order_by(ProjectMember.id)
                .limit(1)
            )

    def set_visibility(self, project: str, visibility: str) -> None:
        if visibility not in VISIBILITIES:
            raise InvalidInput(
                f"unknown visibility {visibility[:40]!r}: use one of {', '.join(VISIBILITIES)}"
            )
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
            if row is None:
                raise _not_found(project)
            row.visibility = visibility
        self.generation += 1
        log.info("visibility set", project=project, visibility=visibility)
        if self._visibility_changed is not None:
            self._visibility_changed(project, visibility)

    def forget(self, project: str) -> None:
        """Drop the project's memberships (the project is being deleted)."""
        with self._db.session() as s:
            for row in s.scalars(select(ProjectMember).where(ProjectMember.project == project)):
                s.delete(row)
        self.generation += 1

    @staticmethod
    def _user_id(s: Session, username: str) -> int:
        user_id = s.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise NotFound(f"user {username[:60]!r} not found")
        return int(user_id)

    @staticmethod
    def _keep_an_owner(s: Session, project: str, *, at_least: int = 2) -> None:
        """Conflict unless the project has ``at_least`` owners (2: before one steps down)."""
        owners = s.scalar(
            select(func.count())
            .select_from(ProjectMember)
            .where(ProjectMember.project == project, ProjectMember.role == Role.owner.name)
        )
        if (owners or 0) < at_least:
            raise Conflict(f"project {project!r} needs an owner: make someone else owner first")

    def _before_change(self, project: str, username: str, role: Role | None) -> None:
        if self._changed is not None:
            self._changed(project, username, role)

    @staticmethod
    def _role_of(s: Session, project: str, user_id: int) -> Role | None:
        role = s.scalar(
            select(ProjectMember.role).where(
                ProjectMember.project == project, ProjectMember.user_id == user_id
            )
        )
        return Role[role] if role else None
