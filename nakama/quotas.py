"""Per-user quotas: how many projects, running apps and environments one user may hold, and how
much disk their projects may take (review finding M4: one user took every app port).

Each check looks up what the project's owner holds and raises :class:`QuotaExceeded` naming the
quota, the use and the setting; admins, and projects without an owner (from before users
existed, admins' only), are not bounded. The decision itself is :func:`refusal`, a pure function;
the lookups are here so that the project service and local mode's build check
(:mod:`backend.local.build_quota`, which adds the environments and disk of a build) share them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nakama.db.session import Database
from nakama.db.tables import Project, User
from nakama.errors import QuotaExceeded
from nakama.settings import QuotaSettings

_SETTING = "NAKAMA_QUOTAS__"


@dataclass(frozen=True)
class Owner:
    id: int
    username: str
    is_admin: bool


def refusal(*, what: str, owner: str, used: float, limit: float, setting: str) -> str | None:
    """Why ``owner`` may not take one more of ``what`` (holding ``used`` of ``limit``), or None."""
    if used < limit:
        return None
    held = what.format(used=_number(used))
    return f"{owner} {held}, the most one user may ({_SETTING}{setting}={_number(limit)})"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def owner_of(s: Session, project: str) -> Owner | None:
    """The project's owner, or None (no such project, or no owner)."""
    row = s.execute(
        select(User.id, User.username, User.is_admin)
        .join(Project, Project.owner_id == User.id)
        .where(Project.name == project)
    ).first()
    return Owner(id=row[0], username=row[1], is_admin=bool(row[2])) if row else None


def user(s: Session, user_id: int, *, lock: bool = False) -> Owner | None:
    """The user ``user_id``; ``lock`` holds their row until the transaction ends (PostgreSQL:
    two creates of one user take turns, so neither counts before the other has inserted;
    SQLite's writers take turns anyway)."""
    query = select(User.id, User.username, User.is_admin).where(User.id == user_id)
    row = s.execute(query.with_for_update() if lock else query).first()
    return Owner(id=row[0], username=row[1], is_admin=bool(row[2])) if row else None


def projects_of(s: Session, owner_id: int) -> list[str]:
    """The names of the projects ``owner_id`` owns, but those being deleted."""
    return list(
        s.scalars(
            select(Project.name).where(Project.owner_id == owner_id, Project.status != "deleting")
        ).all()
    )


# --- projects (both modes) --------------------------------------------------------------------
def check_new_project(s: Session, quotas: QuotaSettings, owner_id: int | None) -> None:
    """Raise unless ``owner_id`` may own one more project. Call it in the transaction that
    inserts the project: it locks the owner's row."""
    if owner_id is None:
        return
    owner = user(s, owner_id, lock=True)
    if owner is None or owner.is_admin:
        return
    count = s.scalar(
        select(func.count(Project.id)).where(
            Project.owner_id == owner_id, Project.status != "deleting"
        )
    )
    why = refusal(
        what="owns {used} projects",
        owner=owner.username,
        used=int(count or 0),
        limit=quotas.projects_per_user,
        setting="PROJECTS_PER_USER",
    )
    if why is not None:
        raise QuotaExceeded(f"project not created: {why}; delete one first")


# --- running apps (local mode) ----------------------------------------------------------------
def check_app_start(
    db: Database, quotas: QuotaSettings, project: str, running: Collection[str]
) -> None:
    """Raise unless ``project``'s app may start while the apps ``running`` hold ports."""
    others = [name for name in running if name != project]
    with db.session() as s:
        owner = owner_of(s, project)
        if owner is None or owner.is_admin:
            return
        count = (
            s.scalar(
                select(func.count(Project.id)).where(
                    Project.owner_id == owner.id, Project.name.in_(others)
                )
            )
            if others
            else 0
        )
    why = refusal(
        what="runs {used} apps",
        owner=owner.username,
        used=int(count or 0),
        limit=quotas.running_apps_per_user,
        setting="RUNNING_APPS_PER_USER",
    )
    if why is not None:
        raise QuotaExceeded(f"not started: {why}; stop or delete one of them")
