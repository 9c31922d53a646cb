"""Finished local builds as readers see them: one virtualenv per dependency hash under the
environments directory (a project's own under ``.private/<project>``), finished when its
``nakama-build.json`` is there. Only the standard library: the post-receive hook, which runs
without site-packages, looks builds up here too."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nakama.errors import InvalidInput

METADATA_FILE = "nakama-build.json"
PRIVATE_DIR = ".private"
HASH_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Environment:
    """A finished build: a virtualenv holding the dependencies whose hash is ``dep_hash``."""

    dep_hash: str
    tag: str
    path: Path
    python: Path
    created_at: datetime
    # What local mode did not honour of the dependency files (packages.txt, ...), for the project.
    notes: tuple[str, ...] = ()


def private_envs_dir(envs_dir: Path, project: str) -> Path:
    """Where environments only ``project`` may use are kept."""
    return envs_dir / PRIVATE_DIR / project


def private_envs_root(envs_dir: Path) -> Path:
    """The directory of every project's own environments (one subdirectory per project)."""
    return envs_dir / PRIVATE_DIR


def find_project_environment(envs_dir: Path, dep_hash: str, project: str) -> Environment | None:
    """The environment ``project`` runs for ``dep_hash``: its own if it has one, else the
    shared one."""
    private = find_environment(private_envs_dir(envs_dir, project), dep_hash)
    return private or find_environment(envs_dir, dep_hash)


def find_environment(envs_dir: Path, dep_hash: str) -> Environment | None:
    """The finished build for ``dep_hash``, or None (absent, partial or broken)."""
    check_hash(dep_hash)
    path = envs_dir / dep_hash
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        env = Environment(
            dep_hash=dep_hash,
            tag=str(meta["tag"]),
            path=path,
            python=path / str(meta["python"]),
            created_at=datetime.fromisoformat(str(meta["created_at"])),
            notes=tuple(str(note) for note in meta.get("notes", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # The interpreter is a symlink to the base Python: if that went away, the build is unusable.
    if meta.get("dep_hash") != dep_hash or not env.python.exists():
        return None
    return env


def list_environments(envs_dir: Path) -> list[Environment]:
    """Every finished build, oldest first."""
    if not envs_dir.is_dir():
        return []
    found = (
        find_environment(envs_dir, entry.name)
        for entry in envs_dir.iterdir()
        if HASH_RE.match(entry.name)
    )
    return sorted((env for env in found if env is not None), key=lambda env: env.created_at)


def check_hash(dep_hash: str) -> None:
    if not HASH_RE.match(dep_hash):
        raise InvalidInput(f"not a dependency hash: {dep_hash!r}")
