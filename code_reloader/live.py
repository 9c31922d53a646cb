"""The ``live`` reload strategy: the running Streamlit process reruns the pushed code itself.

Streamlit can rerun an app when its source changes (``--server.runOnSave true``), but it resolves
every path it watches with ``realpath`` and caches the main script's bytecode by its unresolved
path. Swapping the ``current`` symlink of :mod:`code_reloader.sync` underneath a running
Streamlit is therefore invisible to it: measured (docs/live-reload.md), open sessions keep the
old page and even NEW sessions get the old code, with both file watchers.

So the live strategy keeps the git-sync layout as the record of what is deployed and adds one
stable, real directory that the app runs in::

    <root>/current -> .worktrees/<sha>    as today (sync_commit)
    <root>/live/                          a plain copy of current; the app's cwd, for life
    <root>/live-commit                    the commit that live/ holds, written last

:func:`publish_live` mirrors the synced worktree into ``live/``: only files whose content, mode
or link target differ are written, each through a temporary file and one rename, so Streamlit
never reads a half-written file and its watchers (which compare content hashes) rerun only on
real changes. Changed modules go first, the main script after them and removals last, so the
rerun that the main script triggers finds the new module files on disk (whether Streamlit
reloads a module it has imported already is another matter: see :func:`live_eligible`).

:func:`live_command` turns a ``streamlit run`` command into one that reruns on change; any other
command (a FastAPI app from ``nakama.toml``) gets ``None``: such apps must be restarted.
:func:`live_eligible` says whether a push may skip the restart: only when it changed the main
script alone, because Streamlit reloads other modules only while a browser session watches them.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from code_reloader.sync import exclusive_lock

LIVE_DIR = "live"
LIVE_COMMIT_FILE = "live-commit"
_LOCK_FILE = ".nakama-live.flock"
_TMP_PREFIX = ".nakama-tmp-"
# Never copied from the worktree (its ``.git`` is a file pointing into ``<root>/.git``) and never
# removed from live/ (Python writes byte code there while the app runs).
_SKIPPED = frozenset({".git"})
_KEPT_IN_LIVE = frozenset({"__pycache__"})

# ``watchdog`` (inotify) is a Streamlit dependency on Linux and reacts in ~0.1 s; ``poll`` stats
# every watched file every 0.2 s and is the fallback where inotify watches run out.
LIVE_FLAGS: tuple[str, ...] = ("--server.runOnSave", "true", "--server.fileWatcherType", "watchdog")


# Changing these never changes what the app does.
INERT_FILES = frozenset({"README.md", "README", "LICENSE", ".gitignore", ".gitattributes"})


@dataclass(frozen=True)
class LiveUpdate:
    """What :func:`publish_live` changed in ``live/`` (paths relative to it, sorted)."""

    written: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def live_command(command: Sequence[str]) -> list[str] | None:
    """``command`` with the live flags if it runs ``streamlit run``; ``None`` otherwise.

    A flag the command sets itself is kept; a command that turns rerun-on-save or file watching
    off cannot run live and gets ``None`` as well.
    """
    args = list(command)
    if not _runs_streamlit(args):
        return None
    given = _flag_values(args)
    if given.get("--server.runOnSave", "true").lower() != "true":
        return None
    if given.get("--server.fileWatcherType", "auto") == "none":
        return None
    extra: list[str] = []
    for name, value in zip(LIVE_FLAGS[::2], LIVE_FLAGS[1::2], strict=True):
        if name not in given:
            extra += [name, value]
    return [*args, *extra]


def _flag_values(args: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--server."):
            name, eq, value = arg.partition("=")
            values[name] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
    return values


def main_script(command: Sequence[str]) -> str | None:
    """The script a ``streamlit run`` command runs (as written, relative to the app's cwd)."""
    args = list(command)
    at = _run_index(args)
    if at is None or at + 1 >= len(args) or args[at + 1].startswith("-"):
        return None
    return os.path.normpath(args[at + 1])


def live_eligible(
    changed: Iterable[str], *, command: Sequence[str], inert: Iterable[str] = INERT_FILES
) -> bool:
    """Whether a push that changed ``changed`` (repository paths) may go live without a restart.

    Only when the app is a ``streamlit run`` app and the push changed its main script and
    nothing else Python could have loaded: Streamlit notices other modules only while a session
    watches them, so with no browser open (and during a session's first run) a changed
    ``helpers.py`` would stay stale in ``sys.modules`` until the next restart (measured:
    docs/live-reload.md). Files in ``inert`` (documentation, git metadata) do not count.
    """
    script = main_script(command)
    if script is None:
        return False
    paths = {os.path.normpath(p.lstrip("/")) for p in changed}
    paths -= set(inert)
    return paths == {script}


def _runs_streamlit(args: list[str]) -> bool:
    return _run_index(args) is not None


def _run_index(args: list[str]) -> int | None:
    """Index of the ``run`` in ``streamlit run`` / ``python -m streamlit run``, if any."""
    for i, arg in enumerate(args[:-1]):
        if args[i + 1] != "run":
            continue
        if os.path.basename(arg) == "streamlit" and (i == 0 or args[i - 1] != "-m"):
            return i + 1
        if arg == "streamlit" and i >= 1 and args[i - 1] == "-m":
            return i + 1
    return None


def live_dir(root: Path) -> Path:
    return Path(root) / LIVE_DIR


def live_commit(root: Path) -> str | None:
    """The commit whose files ``<root>/live`` holds, or None before the first publish."""
    try:
        return (Path(root) / LIVE_COMMIT_FILE).read_text(encoding="ascii").strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def publish_live(
    root: Path, worktree: Path, *, commit: str, main_script: str = "app.py"
) -> LiveUpdate:
    """Make ``<root>/live`` a copy of ``worktree`` (a checkout of ``commit``), in place.

    Idempotent, and safe to repeat after an interruption: files are compared, not trusted.
    ``live-commit`` is written only once the copy is complete.
    """
    root = Path(os.path.abspath(root))
    dest = live_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / _LOCK_FILE):  # one publish per root at a time
        dest.mkdir(parents=True, exist_ok=True)
        wanted = _scan(Path(worktree))
        to_write = [rel for rel, entry in wanted.items() if not _same(entry, dest / rel)]
        # Modules and data first, the main script after them: Streamlit reruns on each change.
        to_write.sort(key=lambda rel: (rel == main_script, rel.count("/"), rel))
        for rel in to_write:
            _install(wanted[rel], dest, rel)
        removed = _remove_extra(dest, keep=set(wanted))
        _write_atomic(root / LIVE_COMMIT_FILE, f"{commit}\n".encode("ascii"), mode=0o644)
    return LiveUpdate(written=tuple(sorted(to_write)), removed=tuple(sorted(removed)))


@dataclass(frozen=True)
class _Entry:
    path: Path
    is_link: bool
    mode: int  # permission bits of a file; 0 for a link


def _scan(top: Path) -> dict[str, _Entry]:
    """Every file and symlink under ``top`` (links are not followed), by relative POSIX path."""
    found: dict[str, _Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        rel_dir = base.relative_to(top).as_posix()
        descend = []
        for name in [*dirnames, *filenames]:
            if name in _SKIPPED:
                continue
            path = base / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found[rel] = _Entry(path, True, 0)
            elif stat.S_ISREG(mode):
                found[rel] = _Entry(path, False, stat.S_IMODE(mode))
            elif stat.S_ISDIR(mode):
                descend.append(name)
        dirnames[:] = descend
    return found


def _same(entry: _Entry, target: Path) -> bool:
    try:
        st = target.lstat()
    except (FileNotFoundError, NotADirectoryError):  # absent, or a file where a directory goes
        return False
    if entry.is_link:
        return stat.S_ISLNK(st.st_mode) and os.readlink(target) == os.readlink(entry.path)
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != entry.mode:
        return False
    src = entry.path.stat()
    if src.st_size != st.st_size:
        return False
    return entry.path.read_bytes() == target.read_bytes()


def _install(entry: _Entry, dest: Path, rel: str) -> None:
    target = dest / rel
    _make_parents(dest, rel)
    if entry.is_link:
        tmp = target.parent / f"{_TMP_PREFIX}{target.name}"
        with suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.readlink(entry.path), tmp)
        _replace(tmp, target)
    else:
        _write_atomic(target, entry.path.read_bytes(), mode=entry.mode)


def _make_parents(dest: Path, rel: str) -> None:
    """Create the directories of ``dest/rel`` below ``dest``, replacing files or links there."""
    current = dest
    for part in rel.split("/")[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            current.unlink()
        current.mkdir(exist_ok=True)


def _write_atomic(target: Path, data: bytes, *, mode: int) -> None:
    """Write with a fresh mtime (Streamlit skips events whose mtime did not change) and rename."""
    tmp = target.parent / f"{_TMP_PREFIX}{target.name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        _replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _replace(tmp: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # a directory where the commit now has a file
    os.replace(tmp, target)


def _remove_extra(dest: Path, *, keep: set[str]) -> list[str]:
    """Delete what the commit does not have (deepest first); empty directories go too."""
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        base = Path(dirpath)
        rel_dir = base.relative_to(dest).as_posix()
        if any(part in _KEPT_IN_LIVE for part in Path(rel_dir).parts):
            continue
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in keep:
                (base / name).unlink()
                removed.append(rel)
        if base != dest and not any(base.iterdir()):
            base.rmdir()
    return removed
