"""The local "registry": finished environments in the data dir, one per dependency hash."""

from __future__ import annotations

from pathlib import Path

from image_builder.environments import (
    find_project_environment,
    remove_environment,
    remove_project_environments,
)
from nakama.ports import BuildRef


class LocalRegistry:
    def __init__(self, *, envs_dir: Path) -> None:
        self.envs_dir = envs_dir

    def find(self, project: str, dep_hash: str) -> BuildRef | None:
        env = find_project_environment(self.envs_dir, dep_hash, project)
        if env is None:
            return None
        return BuildRef(dep_hash=env.dep_hash, tag=env.tag, created_at=env.created_at)

    def delete_project(self, project: str, *, dep_hashes: set[str], shared: set[str]) -> None:
        """Remove the project's environments that no other project uses, and those only it
        could use."""
        remove_project_environments(self.envs_dir, project)
        for dep_hash in sorted(dep_hashes - shared):
            remove_environment(self.envs_dir, dep_hash)
