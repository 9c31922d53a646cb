"""Local mode's quota check before a build: how many environments one user may hold, and how
much disk their projects may take (review finding M4). The owner lookups and the decision are
:mod:`nakama.quotas`'; what is counted here (environments under ``$DATA_DIR/envs``, the
repositories, code, data and logs of each project) is local mode's own layout."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from image_builder.environments import find_environment, list_environments, private_envs_dir
from nakama.db.session import Database
from nakama.db.tables import Pipeline
from nakama.errors import QuotaExceeded
from nakama.quotas import owner_of, projects_of, refusal
from nakama.settings import Settings


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
