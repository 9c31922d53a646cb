"""Local-mode "images": one virtualenv per dependency hash, published atomically.

In local mode the registry is a directory. A build is a virtualenv that uv creates and fills in a
temporary directory, then publishes with one ``rename`` to ``<envs_dir>/<hash>``; the
``nakama-build.json`` inside marks it finished, so a reader never sees half an environment. Builds
of one hash are serialised by a file lock, so two pushes with the same dependencies build once.

The virtualenv is made with ``uv venv --relocatable``: a plain virtualenv writes its own absolute
path into every script's shebang, which would still name the temporary directory after the rename.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from uv import find_uv_bin

from image_builder.process import run_step
from nakama.errors import InvalidInput, PermanentError
from nakama.settings import BuilderSettings

METADATA_FILE = "nakama-build.json"
_LOCKS_DIR = ".locks"
_TMP_PREFIX = ".tmp-"
_HASH_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
# Dependency files that change the hash but only a container build can honour.
_CLUSTER_ONLY_FILES = ("packages.txt", "Dockerfile", ".python-version")
_ERROR_TAIL_LINES = 20


@dataclass(frozen=True)
class Environment:
    """A finished build: a virtualenv holding the dependencies whose hash is ``dep_hash``."""

    dep_hash: str
    tag: str
    path: Path
    python: Path
    created_at: datetime


def find_environment(envs_dir: Path, dep_hash: str) -> Environment | None:
    """The finished build for ``dep_hash``, or None (absent, partial or broken)."""
    _check_hash(dep_hash)
    path = envs_dir / dep_hash
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        env = Environment(
            dep_hash=dep_hash,
            tag=str(meta["tag"]),
            path=path,
            python=path / str(meta["python"]),
            created_at=datetime.fromisoformat(str(meta["created_at"])),
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
        if _HASH_RE.match(entry.name)
    )
    return sorted((env for env in found if env is not None), key=lambda env: env.created_at)


def build_environment(
    *,
    envs_dir: Path,
    dep_hash: str,
    tag: str,
    source_dir: Path,
    settings: BuilderSettings,
    log: TextIO,
) -> tuple[Environment, bool]:
    """The environment for ``dep_hash``, built from ``source_dir`` unless it exists.

    Returns the environment and whether this call built it. Raises :class:`PermanentError` with
    the end of uv's output when the build fails or exceeds ``settings.build_timeout_s``.
    """
    found = find_environment(envs_dir, dep_hash)
    if found is not None:
        return found, False
    # uv runs in other directories: every path handed to it must be absolute.
    envs_dir, source_dir = envs_dir.absolute(), source_dir.absolute()
    envs_dir.mkdir(parents=True, exist_ok=True)
    with _hash_lock(envs_dir, dep_hash, log=log):
        found = find_environment(envs_dir, dep_hash)
        if found is not None:  # a concurrent build finished while we waited
            return found, False
        final = envs_dir / dep_hash
        if final.exists() or final.is_symlink():  # not a finished build: replace it
            _discard(envs_dir, final, dep_hash)
        tmp = envs_dir / f"{_TMP_PREFIX}{dep_hash}-{secrets.token_hex(4)}"
        try:
            interpreter = _build_into(tmp, source_dir=source_dir, settings=settings, log=log)
            meta = {"dep_hash": dep_hash, "tag": tag, "created_at": datetime.now(UTC).isoformat()}
            meta |= {"python": "bin/python", "base_python": interpreter}
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    env = find_environment(envs_dir, dep_hash)
    if env is None:
        raise PermanentError(f"environment {dep_hash} vanished right after it was published")
    log.write(f"environment {dep_hash} published as {tag}\n")
    log.flush()
    return env, True


def remove_environment(envs_dir: Path, dep_hash: str) -> None:
    """Delete the build for ``dep_hash``; nothing happens if there is none."""
    _check_hash(dep_hash)
    final = envs_dir / dep_hash
    if not (final.exists() or final.is_symlink()):
        return
    with _hash_lock(envs_dir, dep_hash):
        _discard(envs_dir, final, dep_hash)


def clean_partial_builds(envs_dir: Path) -> int:
    """Remove what interrupted builds left behind; returns how many leftovers went.

    A temporary directory whose hash lock is held belongs to a running build and is kept.
    """
    if not envs_dir.is_dir():
        return 0
    removed = 0
    for entry in sorted(envs_dir.iterdir()):
        if not entry.name.startswith(_TMP_PREFIX):
            continue
        dep_hash = entry.name[len(_TMP_PREFIX) :].rsplit("-", 1)[0]
        if not _HASH_RE.match(dep_hash):
            removed += _remove_path(entry)
            continue
        with _hash_lock(envs_dir, dep_hash, blocking=False) as acquired:
            if acquired:
                removed += _remove_path(entry)
    return removed


def _build_into(tmp: Path, *, source_dir: Path, settings: BuilderSettings, log: TextIO) -> str:
    """Create and fill the virtualenv at ``tmp``; returns the base interpreter used."""
    deadline = time.monotonic() + settings.build_timeout_s
    interpreter = settings.python or sys.executable
    env = _uv_env(settings)
    uv = str(find_uv_bin())  # the uv Nakama depends on, not whichever is on PATH
    log.write(f"building environment with {interpreter}\n")
    ignored = [name for name in _CLUSTER_ONLY_FILES if (source_dir / name).exists()]
    if ignored:
        log.write(f"ignored in local mode (cluster builds only): {', '.join(ignored)}\n")

    def run(args: list[str], cwd: Path) -> None:
        timeout_s = settings.build_timeout_s
        _run_uv(args, cwd=cwd, env=env, deadline=deadline, timeout_s=timeout_s, log=log)

    run([uv, "venv", "--relocatable", "--python", interpreter, str(tmp)], tmp.parent)
    candidates = (source_dir / "requirements.txt", source_dir / "pyproject.toml")
    spec = next((path for path in candidates if path.is_file()), None)
    if spec is None:
        log.write("no requirements.txt or pyproject.toml: nothing to install\n")
        return interpreter
    python = tmp / "bin" / "python"
    # cwd is the source so that relative paths in the requirements resolve as the author meant.
    run([uv, "pip", "install", "--python", str(python), "-r", str(spec)], source_dir)
    return interpreter


# A build must not outlive Nakama: if Nakama is killed, uv is killed with it, so nothing keeps
# writing into a build directory that the next start cleans up (util-linux's setpriv).
_DIE_WITH_US: tuple[str, ...] = (
    ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
)


def _run_uv(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    deadline: float,
    timeout_s: float,
    log: TextIO,
) -> None:
    """Run uv, copying its output into ``log`` line by line; kill it at ``deadline``."""
    step = f"uv {args[1]}" + (f" {args[2]}" if args[1] == "pip" else "")
    result = run_step(
        [*_DIE_WITH_US, *args],
        out=log,
        deadline=deadline,
        cwd=cwd,
        env=env,
        tail_lines=_ERROR_TAIL_LINES,
    )
    output = "\n".join(result.tail)
    if result.timed_out:
        raise PermanentError(f"environment build timed out after {timeout_s:g}s:\n{output}")
    if result.returncode != 0:
        raise PermanentError(f"{step} failed ({result.returncode}):\n{output}")


def _uv_env(settings: BuilderSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    if settings.uv_cache_dir is not None:
        env["UV_CACHE_DIR"] = str(settings.uv_cache_dir.absolute())
    return env


@contextmanager
def _hash_lock(
    envs_dir: Path, dep_hash: str, *, blocking: bool = True, log: TextIO | None = None
) -> Iterator[bool]:
    """Hold the exclusive lock for one hash; yields False if ``blocking`` is off and it is busy."""
    locks = envs_dir / _LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{dep_hash}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            if log is not None:
                log.write(f"waiting for a concurrent build of {dep_hash}\n")
                log.flush()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _discard(envs_dir: Path, path: Path, dep_hash: str) -> None:
    """Take ``path`` out of sight with one rename, then delete it."""
    trash = envs_dir / f"{_TMP_PREFIX}{dep_hash}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    _remove_path(trash)


def _remove_path(path: Path) -> int:
    """Delete a file, symlink or tree; 1 if something was there, else 0."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def _check_hash(dep_hash: str) -> None:
    if not _HASH_RE.match(dep_hash):
        raise InvalidInput(f"not a dependency hash: {dep_hash!r}")
