"""Local-mode "images": one virtualenv per dependency hash, published atomically.

In local mode the registry is a directory. A build is a virtualenv that uv creates and fills in a
temporary directory, then publishes with one ``rename`` to ``<envs_dir>/<hash>``; the
``nakama-build.json`` inside marks it finished, so a reader never sees half an environment. Builds
of one hash are serialised by a file lock, so two pushes with the same dependencies build once.

The virtualenv is made with ``uv venv --relocatable``: a plain virtualenv writes its own absolute
path into every script's shebang, which would still name the temporary directory after the rename.

What is installed comes from one file, chosen by :func:`image_builder.lockfiles.choose_source`
(``uv.lock``, then ``poetry.lock``, ``Pipfile.lock``, ``requirements.txt``, ``pyproject.toml``);
a lock file is first made into pinned requirements (``uv export --frozen`` for ``uv.lock``,
run like every uv step), kept in the environment as ``nakama-requirements.txt``. What local mode
cannot honour (``packages.txt``, a ``Dockerfile``, ``.python-version``) is said in the log and
kept in the environment's notes, which the project shows.

With a :class:`BuildSandbox` (local mode's default) a build sees only the dependency files (the
``requirements*.txt``, ``pyproject.toml`` and lock files a container build uses too), gets a
clean environment (nothing of Nakama's), and runs in two steps:

1. wheels only (``uv pip install --no-build``): no code of the project's or of any package runs,
   so the build is the same for every project with these dependency files; it runs as the
   builder's uid with the shared uv cache, and the environment is shared by everyone with the
   same hash;
2. only if that fails (a package needs building, or the files are wrong): the full install, in
   the project's own sandbox (its uid, its own uv cache), where a package's ``setup.py`` may run;
   the environment is the project's alone (``.private/<project>/<hash>``), so nothing a build runs
   can reach another project's environment, now or through a cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from uv import find_uv_bin

from image_builder.dockerfile import REQUIREMENTS_FILE
from image_builder.lockfiles import (
    LOCK_FILES,
    LOCKED_REQUIREMENTS,
    PYPROJECT,
    UV_LOCK,
    LockFileError,
    choose_source,
    count_requirements,
    locked_requirements,
    uv_export_args,
)
from image_builder.process import run_step
from image_builder.published import HASH_RE, PRIVATE_DIR, check_hash
from image_builder.published import METADATA_FILE as METADATA_FILE
from image_builder.published import Environment as Environment
from image_builder.published import find_environment as find_environment
from image_builder.published import find_project_environment as find_project_environment
from image_builder.published import list_environments as list_environments
from image_builder.published import private_envs_dir as private_envs_dir
from image_builder.published import private_envs_root as private_envs_root
from image_builder.system_packages import PACKAGES_FILE, local_mode_note
from nakama.clients.cgroups import Limiter
from nakama.clients.sandbox import Jail, Sandbox, python_roots
from nakama.errors import PermanentError
from nakama.limits import AppLimits
from nakama.settings import BuilderSettings

_LOCKS_DIR = ".locks"
_CACHE_DIR = ".uv-cache"
# What a build inherits of Nakama's environment: the operator's locale, time zone, proxies and
# package index; nothing else (NAKAMA_* settings and secrets above all).
_BUILD_INHERITED = (
    *("LANG", "LANGUAGE", "TZ"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "UV_NATIVE_TLS", "UV_SYSTEM_CERTS"),
)
_BUILD_INHERITED_PREFIXES = ("LC_", "UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX")
_BUILD_INHERITED_PROXIES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
_BUILD_PATH = "/usr/local/bin:/usr/bin:/bin"
_TMP_PREFIX = ".tmp-"
_ERROR_TAIL_LINES = 20


@dataclass(frozen=True)
class BuildSandbox:
    """How builds are sandboxed: ``sandbox`` wraps each uv run; ``builder_uid`` runs the
    wheels-only step, ``project_uid(project)`` the full one. Each step's uv cache lies in the
    directory it may write (the environments, or the project's own), so that uv hardlinks from
    it: inside a sandbox, another mount would make it copy every file. ``shared_cache`` moves
    the wheels-only step's cache elsewhere (then uv copies)."""

    sandbox: Sandbox
    builder_uid: int | None
    project_uid: Callable[[str], int | None]
    shared_cache: Path | None = None
    limiter: Limiter | None = None
    limits: Callable[[str], AppLimits] | None = None


def remove_project_environments(envs_dir: Path, project: str) -> None:
    """Delete every environment only ``project`` used."""
    shutil.rmtree(private_envs_dir(envs_dir, project), ignore_errors=True)


def build_environment(
    *,
    envs_dir: Path,
    dep_hash: str,
    tag: str,
    source_dir: Path,
    settings: BuilderSettings,
    log: TextIO,
    project: str | None = None,
    sandbox: BuildSandbox | None = None,
) -> tuple[Environment, bool]:
    """The environment for ``dep_hash``, built from ``source_dir`` unless it exists.

    Returns the environment and whether this call built it. Raises :class:`PermanentError` with
    the end of uv's output when the build fails or exceeds ``settings.build_timeout_s``. With
    ``sandbox`` (which needs ``project``) the build runs sandboxed in the two steps the module
    describes.
    """
    found = find_project_environment(envs_dir, dep_hash, project) if project else None
    found = found or find_environment(envs_dir, dep_hash)
    if found is not None:
        return found, False
    # uv runs in other directories: every path handed to it must be absolute.
    envs_dir, source_dir = envs_dir.absolute(), source_dir.absolute()
    deadline = time.monotonic() + settings.build_timeout_s
    notes = local_notes(source_dir, settings)
    for note in notes:
        log.write(f"note: {note}\n")
    if sandbox is None or project is None or not sandbox.sandbox.enabled:
        step = _Step(settings=settings, deadline=deadline, log=log, notes=notes)
        return _publish(envs_dir, dep_hash, tag, source_dir, step, log=log)
    with tempfile.TemporaryDirectory(prefix="nakama-deps-") as tmp_src:
        deps = _dependency_copy(source_dir, Path(tmp_src), log)
        wheels = _Step(
            settings=settings,
            deadline=deadline,
            log=log,
            sandbox=sandbox,
            uid=sandbox.builder_uid,
            root=envs_dir,
            cache=sandbox.shared_cache or envs_dir / _CACHE_DIR,
            source=deps,
            wheels_only=True,
            group=None,
            notes=notes,
        )
        try:
            return _publish(envs_dir, dep_hash, tag, deps, wheels, log=log)
        except PermanentError as exc:
            if wheels.timed_out or isinstance(exc, LockFileError):
                raise  # the full install would find the same lock file
            log.write(f"wheels alone do not make this environment ({str(exc).splitlines()[0]})\n")
            log.write("building it in the project's own sandbox; it is the project's alone\n")
            log.flush()
        private = private_envs_dir(envs_dir, project)
        full = _Step(
            settings=settings,
            deadline=deadline,
            log=log,
            sandbox=sandbox,
            uid=sandbox.project_uid(project),
            root=private,
            cache=private / _CACHE_DIR,
            source=deps,
            wheels_only=False,
            group=f"build-{project}",
            limits=sandbox.limits(project) if sandbox.limits else None,
            notes=notes,
        )
        return _publish(private, dep_hash, tag, deps, full, log=log)


def _publish(
    envs_dir: Path, dep_hash: str, tag: str, source_dir: Path, step: _Step, *, log: TextIO
) -> tuple[Environment, bool]:
    """Build into a temporary directory of ``envs_dir`` and rename it into place, under the
    hash's lock (a concurrent build of the same hash is waited for, not repeated)."""
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
            interpreter = _build_into(tmp, source_dir=source_dir, step=step)
            meta: dict[str, object] = {"dep_hash": dep_hash, "tag": tag}
            meta |= {"created_at": datetime.now(UTC).isoformat()}
            meta |= {"python": "bin/python", "base_python": interpreter}
            meta |= {"notes": list(step.notes)} if step.notes else {}
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


_LOCAL_REQUIREMENT = re.compile(r"^\s*(-e\s+|--editable\s+)?(\.{1,2}/|/|file:)")


def _warn_local_paths(requirements: Path, log: TextIO) -> None:
    """Say why a path in the repository cannot be installed: a build sees only the
    dependency files (in both modes: a container build copies only them before installing)."""
    for number, line in enumerate(requirements.read_text(errors="replace").splitlines(), 1):
        if _LOCAL_REQUIREMENT.match(line):
            log.write(
                f"{requirements.name}:{number}: {line.strip()!r} is a path: a build has only "
                "the dependency files, so a package from the repository cannot be installed; "
                "publish it to an index or name it by URL\n"
            )


def _dependency_copy(source_dir: Path, dest: Path, log: TextIO) -> Path:
    """The dependency files of ``source_dir`` alone (regular files, not links), in ``dest``:
    what a container build copies before its install step."""
    for entry in sorted(source_dir.iterdir()):
        if not (REQUIREMENTS_FILE.match(entry.name) or entry.name in (PYPROJECT, *LOCK_FILES)):
            continue
        if entry.is_symlink() or not entry.is_file():
            continue
        shutil.copyfile(entry, dest / entry.name)
        if REQUIREMENTS_FILE.match(entry.name):
            _warn_local_paths(entry, log)
    dest.chmod(0o755)
    for entry in dest.iterdir():
        entry.chmod(0o644)
    return dest


def remove_environment(envs_dir: Path, dep_hash: str) -> None:
    """Delete the build for ``dep_hash``; nothing happens if there is none."""
    check_hash(dep_hash)
    final = envs_dir / dep_hash
    if not (final.exists() or final.is_symlink()):
        return
    with _hash_lock(envs_dir, dep_hash):
        _discard(envs_dir, final, dep_hash)


def clean_partial_builds(envs_dir: Path) -> int:
    """Remove what interrupted builds left behind; returns how many leftovers went.

    A temporary directory whose hash lock is held belongs to a running build and is kept.
    Projects' own environments (``.private/<project>``) are cleaned the same way.
    """
    if not envs_dir.is_dir():
        return 0
    removed = 0
    private = envs_dir / PRIVATE_DIR
    if private.is_dir():
        for project in sorted(private.iterdir()):
            if project.is_dir() and not project.is_symlink():
                removed += clean_partial_builds(project)
    for entry in sorted(envs_dir.iterdir()):
        if not entry.name.startswith(_TMP_PREFIX):
            continue
        dep_hash = entry.name[len(_TMP_PREFIX) :].rsplit("-", 1)[0]
        if not HASH_RE.match(dep_hash):
            removed += _remove_path(entry)
            continue
        with _hash_lock(envs_dir, dep_hash, blocking=False) as acquired:
            if acquired:
                removed += _remove_path(entry)
    return removed


@dataclass
class _Step:
    """One way of running uv for a build: sandboxed or not, as whom, with which cache."""

    settings: BuilderSettings
    deadline: float
    log: TextIO
    sandbox: BuildSandbox | None = None
    uid: int | None = None
    root: Path | None = None  # the one directory a sandboxed step may write
    cache: Path | None = None
    source: Path | None = None
    wheels_only: bool = False
    group: str | None = None
    limits: AppLimits | None = None
    notes: tuple[str, ...] = ()
    timed_out: bool = False

    def run(self, args: list[str], *, cwd: Path, target: Path) -> None:
        env = _uv_env(self.settings, cache=self.cache, clean=self.sandbox is not None)
        preexec = None
        if self.sandbox is not None:
            rw = [path for path in (self.root, self.cache) if path is not None]
            rw = [path for path in rw if not any(path.is_relative_to(o) and path != o for o in rw)]
            uid = self.uid if os.geteuid() == 0 else None
            for path in (self.root, self.cache):
                if path is None:
                    continue
                path.mkdir(parents=True, exist_ok=True)
                if uid is not None and path.stat().st_uid != uid:
                    # The cache whole (once: what uv adds later is the uid's already); of the
                    # environments only the directory, where uv makes the new one.
                    _own(path, uid) if path == self.cache else os.chown(path, uid, uid)
            cache, root = self.cache, self.root
            if cache is not None and root is not None and not cache.is_relative_to(root):
                env["UV_LINK_MODE"] = "copy"  # another mount: hardlinks cannot cross it
            ro = [Path(find_uv_bin()).parent, *python_roots(Path(self._interpreter()))]
            ro += [self.source] if self.source is not None else []
            jail = Jail(ro=tuple(ro), rw=tuple(rw), cwd=cwd, uid=self.uid, hostname="nakama-build")
            args = self.sandbox.sandbox.wrap(args, jail)
            limiter = self.sandbox.limiter
            group = None
            if limiter is not None and self.limits is not None and self.group is not None:
                group = limiter.group(self.group, self.limits)
            if limiter is not None:
                preexec = limiter.preexec(self.limits, group, ignore_sigterm=True)
        try:
            _run_uv(
                args,
                cwd=cwd,
                env=env,
                deadline=self.deadline,
                timeout_s=self.settings.build_timeout_s,
                log=self.log,
                preexec=preexec,
            )
        except _TimedOut as exc:
            self.timed_out = True
            raise PermanentError(str(exc)) from None

    def _interpreter(self) -> str:
        return base_interpreter(self.settings.python)


def base_interpreter(chosen: str | None) -> str:
    """The interpreter an app environment is made from: the one chosen, or the one running
    Nakama, with symbolic links resolved. uv links an environment's ``bin/python`` to the path
    it is given; Nakama itself often runs from a virtualenv (``.venv`` of scripts/up) whose
    ``bin/python`` is a link to the real one, and a sandbox binds only the real installation,
    so a link through Nakama's virtualenv would dangle there. A version request ("3.12") is
    passed on as it is."""
    path = chosen or sys.executable
    return os.path.realpath(path) if os.path.exists(path) else path


def _own(path: Path, uid: int) -> None:
    """Give ``path`` (a cache) to ``uid``, who may change what is in it."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.lchown(dirpath, uid, uid)
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, uid)


def _build_into(tmp: Path, *, source_dir: Path, step: _Step) -> str:
    """Create and fill the virtualenv at ``tmp``; returns the base interpreter used."""
    log = step.log
    interpreter = base_interpreter(step.settings.python)
    uv = str(find_uv_bin())  # the uv Nakama depends on, not whichever is on PATH
    how = " (wheels only)" if step.wheels_only else ""
    log.write(f"building environment with {interpreter}{how}\n")
    step.run([uv, "venv", "--relocatable", "--python", interpreter, str(tmp)], cwd=tmp.parent,
             target=tmp)  # fmt: skip
    present = {entry.name for entry in source_dir.iterdir() if entry.is_file()}
    source = choose_source(present)
    if source is None:
        log.write("no uv.lock, poetry.lock, Pipfile.lock, requirements.txt or pyproject.toml: "
                  "nothing to install\n")  # fmt: skip
        return interpreter
    log.write(f"{source.describe()}\n")
    spec = source_dir / source.file
    if source.file == UV_LOCK:
        spec = tmp / LOCKED_REQUIREMENTS
        _export_uv_lock(uv, source_dir=source_dir, output=spec, step=step)
    elif source.is_lock:
        spec = tmp / LOCKED_REQUIREMENTS
        spec.write_text(locked_requirements(source.file, (source_dir / source.file).read_bytes()))
    if source.is_lock:
        log.write(f"{source.file}: {count_requirements(spec.read_text())} package(s) pinned\n")
    python = tmp / "bin" / "python"
    install = [uv, "pip", "install", "--python", str(python), "-r", str(spec)]
    if step.wheels_only:
        install.append("--no-build")
    # cwd is the source so that relative paths in the requirements resolve as the author meant.
    step.run(install, cwd=source_dir, target=tmp)
    return interpreter


def _export_uv_lock(uv: str, *, source_dir: Path, output: Path, step: _Step) -> None:
    """``uv export --frozen`` of the source's ``uv.lock`` into ``output``; a lock that uv cannot
    read (or that has no pyproject.toml beside it) is a :class:`LockFileError`."""
    if not (source_dir / PYPROJECT).is_file():
        raise LockFileError(
            f"{UV_LOCK} has no {PYPROJECT} beside it: commit the pyproject.toml it was locked from"
        )
    try:
        step.run([uv, *uv_export_args(project_dir=str(source_dir), output=str(output))],
                 cwd=source_dir, target=output.parent)  # fmt: skip
    except PermanentError as exc:
        if step.timed_out:
            raise
        detail = str(exc).split("\n", 1)[-1].strip()
        message = f"{UV_LOCK} could not be read by uv export --frozen:\n{detail}"
        raise LockFileError(message) from None


def local_notes(source_dir: Path, settings: BuilderSettings) -> tuple[str, ...]:
    """What local mode does not honour of the dependency files at ``source_dir``."""
    notes: list[str] = []
    packages = source_dir / PACKAGES_FILE
    if packages.is_file() and not packages.is_symlink():
        note = local_mode_note(packages.read_text(encoding="utf-8", errors="replace"))
        if note is not None:
            notes.append(note)
    if (source_dir / "Dockerfile").is_file():
        notes.append(
            "Dockerfile is not used in local mode: the app runs in a virtualenv of its Python "
            "dependencies (cluster mode builds the image from it)"
        )
    version = source_dir / ".python-version"
    if version.is_file() and not version.is_symlink():
        wanted = version.read_text(encoding="utf-8", errors="replace").strip()[:40]
        python = settings.python or f"{sys.executable}, {sys.version.split()[0]}"
        notes.append(
            f".python-version ({wanted}) is not honoured in local mode: the environment uses "
            f"Nakama's Python ({python})"
        )
    return tuple(notes)


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
    preexec: Callable[[], None] | None = None,
) -> None:
    """Run uv, copying its output into ``log`` line by line; kill it at ``deadline``."""
    uv_at = next(i for i, arg in enumerate(args) if arg.endswith("uv"))
    step = f"uv {args[uv_at + 1]}" + (f" {args[uv_at + 2]}" if args[uv_at + 1] == "pip" else "")
    result = run_step(
        [*_DIE_WITH_US, *args],
        out=log,
        deadline=deadline,
        cwd=cwd,
        env=env,
        tail_lines=_ERROR_TAIL_LINES,
        preexec=preexec,
    )
    output = "\n".join(result.tail)
    if result.timed_out:
        raise _TimedOut(f"environment build timed out after {timeout_s:g}s:\n{output}")
    if result.returncode != 0:
        raise PermanentError(f"{step} failed ({result.returncode}):\n{output}")


class _TimedOut(PermanentError):
    pass


def _uv_env(
    settings: BuilderSettings, *, cache: Path | None = None, clean: bool = False
) -> dict[str, str]:
    """uv's environment. ``clean`` (a sandboxed build): only the operator's locale, proxies
    and package index of Nakama's own, and uv told to read no configuration file (a pushed
    ``uv.toml`` must not steer it) and to download no Python."""
    if clean:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in _BUILD_INHERITED
            or k.startswith(_BUILD_INHERITED_PREFIXES)
            or k.lower() in _BUILD_INHERITED_PROXIES
        }
        env |= {"PATH": _BUILD_PATH, "HOME": "/tmp", "UV_NO_CONFIG": "1"}  # noqa: S108
        env["UV_PYTHON_DOWNLOADS"] = "never"
    else:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    if cache is not None:
        env["UV_CACHE_DIR"] = str(cache.absolute())
    elif settings.uv_cache_dir is not None:
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
