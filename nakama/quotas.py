"""Per-user quotas: how many projects, running apps and environments one user may hold, and how
much disk their projects may take (review finding M4: one user took every app port).

Each check looks up what the project's owner holds and raises :class:`QuotaExceeded` naming the
quota, the use and the setting; admins, and projects without an owner (from before users
existed, admins' only), are not bounded. The decision itself is :func:`refusal`, a pure function;
the lookups are here so that the local runtime and job runner (which must not import
``backend``) and the project service share them.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from image_builder.environments import find_environment, list_environments, private_envs_dir
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, User
from nakama.errors import QuotaExceeded
from nakama.settings import QuotaSettings, Settings

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


# --- environments and disk (local mode, before a build) ---------------------------------------
def check_build(db: Database, settings: Settings, *, project: str) -> None:
    """Raise unless ``project``'s owner may have one more environment built: they hold fewer
    environments than their quota, and their projects take less disk than theirs."""
    with db.session() as s:
        owner = owner_of(s, project)
        if owner is None or owner.is_admin:
            return
        names = projects_of(s, owner.id)
        hashes = set(
            s.scalars(
                select(Pipeline.dep_hash)
                .where(Pipeline.project.in_(names), Pipeline.dep_hash.is_not(None))
                .distinct()
            ).all()
        )
    data = settings.data_dir
    envs_dir = data / "envs"
    environments = [
        env.path for name in names for env in list_environments(private_envs_dir(envs_dir, name))
    ]
    environments += [
        env.path for h in sorted(h for h in hashes if h) if (env := find_environment(envs_dir, h))
    ]
    quotas = settings.quotas
    why = refusal(
        what="holds {used} environments",
        owner=owner.username,
        used=len(environments),
        limit=quotas.environments_per_user,
        setting="ENVIRONMENTS_PER_USER",
    )
    if why is not None:
        raise QuotaExceeded(
            f"not built: {why}; environments no project needs are pruned after "
            f"{settings.retention.environments_days:g} days, or delete a project"
        )
    paths = [*environments]
    for name in names:
        paths += [data / "apps" / name, data / "git" / f"{name}.git"]
        paths += [data / "logs" / "pipelines" / name]
    used_mib = sum(disk_usage(path) for path in paths) / 2**20
    why = refusal(
        what="uses {used} MiB of disk",
        owner=owner.username,
        used=used_mib,
        limit=quotas.disk_mib_per_user,
        setting="DISK_MIB_PER_USER",
    )
    if why is not None:
        raise QuotaExceeded(
            f"not built: {why} (environments, repositories, code, data and logs of "
            f"{len(names)} projects); free space in $DATA_DIR or delete a project"
        )


def disk_usage(top: Path) -> int:
    """Bytes the files under ``top`` take on disk (hard links once); links are not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
