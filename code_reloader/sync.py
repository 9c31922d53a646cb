"""Put one commit into an app's directory the way git-sync v4 does: fetch, worktree, swap a link.

A reload must never show an app half of two commits, and it sits on the push-to-live path, so it
must be quick. The on-disk layout is git-sync v4's, so that the cluster's init container and local
mode share one contract::

    <root>/.git/                 objects; fetched into by commit hash only
    <root>/.worktrees/<sha>/     one checkout per synced commit
    <root>/<link> -> .worktrees/<sha>   relative symlink, replaced by one rename

Readers resolve ``<link>`` once per load; ``basename(readlink(<link>))`` is the deployed commit.
Everything else under ``<root>`` is ours: ``.git/nakama-sync-history`` lists the commits published,
newest last, so that stale worktrees can be told from the ones to keep and from leftovers of an
interrupted sync.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from nakama.clients.git import FULL_SHA, GitError, mask_credentials, run_git
from nakama.errors import InvalidInput, PermanentError

WORKTREES_DIR = ".worktrees"
_HISTORY_FILE = "nakama-sync-history"
_LOCK_FILE = "nakama-sync.flock"
_LINK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# The helper answers git from the environment, so the password is on no command line and in no
# file git writes; git hands it only to the transport that asked.
_PASSWORD_ENV = "NAKAMA_SYNC_PASSWORD"  # noqa: S105 - a variable name
_USERNAME_ENV = "NAKAMA_SYNC_USERNAME"
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USERNAME_ENV}" "${_PASSWORD_ENV}"; }}; f'
)


def current_commit(root: Path, link: str = "current") -> str | None:
    """The commit ``<root>/<link>`` points at, or None before the first sync."""
    try:
        target = os.readlink(Path(root) / link)
    except OSError:  # absent, or not a symlink
        return None
    return os.path.basename(target.rstrip("/")) or None


def sync_commit(
    *,
    repo_url: str,
    commit: str,
    root: Path,
    link: str = "current",
    password_file: Path | None = None,
    username: str = "nakama",
    depth: int = 1,
    keep: int = 1,
) -> Path:
    """Make ``<root>/<link>`` point at a checkout of ``commit``; returns the worktree's path.

    Idempotent: when the link already points at ``commit`` nothing else runs. ``keep`` previous
    worktrees survive the swap (for readers still on the old code); older ones are removed.
    """
    sha = _check_inputs(repo_url=repo_url, commit=commit, link=link, depth=depth, keep=keep)
    root = Path(os.path.abspath(root))
    worktree = root / WORKTREES_DIR / sha
    target = f"{WORKTREES_DIR}/{sha}"
    if _points_at(root / link, target, worktree):
        return worktree
    git_dir = root / ".git"
    git_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(git_dir / _LOCK_FILE):  # one sync per root at a time
        if _points_at(root / link, target, worktree):  # a concurrent sync did it
            return worktree
        _prepare_repo(root, git_dir)
        history = _read_history(git_dir)
        previous = current_commit(root, link)
        if not (sha in history and (worktree / ".git").is_file()):
            # Not a finished checkout of ours: absent, or left by an interrupted sync.
            auth = _auth(password_file, username)
            _check_out(
                git_dir, worktree=worktree, repo_url=repo_url, sha=sha, depth=depth, env=auth
            )
        _publish(root, link, target)
        history = [h for h in history if h not in (sha, previous)]
        if previous is not None and FULL_SHA.match(previous):
            history.append(previous)
        history = [*history[-keep:], sha] if keep else [sha]
        _write_history(git_dir, history)
        _remove_stale(git_dir, root=root, keep=set(history))
    return worktree


def _check_inputs(*, repo_url: str, commit: str, link: str, depth: int, keep: int) -> str:
    sha = commit.strip().lower()
    if not FULL_SHA.match(sha):
        raise InvalidInput(f"commit must be a full hash, got {commit!r}")
    if not repo_url or repo_url.startswith("-"):
        raise InvalidInput(f"not a repository URL: {mask_credentials(repo_url)!r}")
    if not _LINK_NAME.match(link) or link in (".git", WORKTREES_DIR):
        raise InvalidInput(f"link must be a plain file name, got {link!r}")
    if depth < 0 or keep < 0:
        raise InvalidInput("depth and keep must not be negative")
    return sha


def _points_at(link: Path, target: str, worktree: Path) -> bool:
    try:
        return os.readlink(link) == target and (worktree / ".git").is_file()
    except OSError:
        return False


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent), across processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _prepare_repo(root: Path, git_dir: Path) -> None:
    """Create the repository, or clear what a killed git left behind in it."""
    if not ((git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir()):
        run_git(["init", "--quiet", "--initial-branch=nakama-sync", str(root)], cwd=root)
        return
    # We hold the sync lock, so no git process of ours runs here: any lock file is stale.
    for stale in (*git_dir.glob("*.lock"), *git_dir.glob("worktrees/*/*.lock")):
        with suppress(FileNotFoundError):
            stale.unlink()


def _auth(password_file: Path | None, username: str) -> dict[str, str] | None:
    """Environment for the credential helper; the file is re-read on every sync (rotation)."""
    if password_file is None:
        return None
    try:
        password = Path(password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PermanentError(f"cannot read password file {password_file}: {exc.strerror}") from None
    if not password or "\n" in password:
        raise PermanentError(f"password file {password_file} must hold one non-empty line")
    return {_PASSWORD_ENV: password, _USERNAME_ENV: username}


def _check_out(
    git_dir: Path,
    *,
    worktree: Path,
    repo_url: str,
    sha: str,
    depth: int,
    env: dict[str, str] | None,
) -> None:
    """Create ``worktree`` at ``sha``, first clearing whatever an interrupted sync left there."""
    root = git_dir.parent
    if _remove_worktree(git_dir, worktree):
        run_git(["worktree", "prune"], git_dir=git_dir, cwd=root)
    _fetch(git_dir, repo_url=repo_url, sha=sha, depth=depth, env=env)
    # --force twice: a path still registered by a killed sync (even locked) may be reused.
    args = ["worktree", "add", "--quiet", "--force", "--force", "--detach", str(worktree), sha]
    run_git(args, git_dir=git_dir, cwd=root)


def _fetch(
    git_dir: Path, *, repo_url: str, sha: str, depth: int, env: dict[str, str] | None
) -> None:
    """Fetch exactly ``sha``: one commit's objects, no refs, no tags."""
    config = ["-c", "credential.helper=", "-c", f"credential.helper={_CREDENTIAL_HELPER}"]
    # Keeping the received pack whole is faster than exploding it into loose objects.
    args = [
        *(config if env else []),
        "-c",
        "fetch.unpackLimit=1",
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
        *(["--depth", str(depth)] if depth else []),
        "--",
        repo_url,
        sha,
    ]
    try:
        run_git(args, git_dir=git_dir, env=env)
    except GitError as exc:
        raise GitError(f"fetching {sha} from {mask_credentials(repo_url)}: {exc}") from exc


def _publish(root: Path, link: str, target: str) -> None:
    """Point ``<root>/<link>`` at ``target`` with one rename: readers see old or new, never none."""
    tmp = root / f".{link}.nakama-tmp"
    with suppress(FileNotFoundError):
        tmp.unlink()  # left by an interrupted sync
    os.symlink(target, tmp)
    try:
        os.replace(tmp, root / link)
    except OSError as exc:
        tmp.unlink()
        raise PermanentError(f"cannot replace {root / link}: {exc.strerror}") from exc


def _remove_stale(git_dir: Path, *, root: Path, keep: set[str]) -> None:
    """Remove every worktree not in ``keep``, including leftovers of interrupted syncs."""
    try:
        entries = list((root / WORKTREES_DIR).iterdir())
    except FileNotFoundError:
        return
    pruned = False
    for entry in entries:
        if entry.name not in keep:
            pruned |= _remove_worktree(git_dir, entry)
    # The new commit is live by now; if pruning fails, the next sync retries it.
    if pruned:
        with suppress(GitError):
            run_git(["worktree", "prune"], git_dir=git_dir, cwd=root)


def _remove_worktree(git_dir: Path, path: Path) -> bool:
    """Delete one worktree; True if git's bookkeeping still needs a ``worktree prune``."""
    if not os.path.lexists(path):
        return False
    if (path / ".git").is_file():
        removed = run_git(
            ["worktree", "remove", "--force", "--force", str(path)],
            git_dir=git_dir,
            cwd=git_dir.parent,
            check=False,
        )
        if removed.returncode == 0 and not os.path.lexists(path):
            return False
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()
    return True


def _read_history(git_dir: Path) -> list[str]:
    try:
        lines = (git_dir / _HISTORY_FILE).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []
    return [line for line in lines if FULL_SHA.match(line)]


def _write_history(git_dir: Path, history: list[str]) -> None:
    tmp = git_dir / f"{_HISTORY_FILE}.tmp"
    tmp.write_text("".join(f"{sha}\n" for sha in history), encoding="utf-8")
    os.replace(tmp, git_dir / _HISTORY_FILE)
