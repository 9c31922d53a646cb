"""Local mode's forge: one bare git repository per project on disk.

It plays GitLab's part on a single machine: repositories are created from the starter kit
without a work tree, served by :mod:`backend.local.gitserver`, and each carries a post-receive hook
(:mod:`backend.local.post_receive`) that sends a GitLab-format Push Hook to the receiver. The
compare and file reads the push planner needs come from git plumbing here. Every git command goes
through :func:`nakama.clients.git.run_git`, but an import's fetch (:mod:`backend.local.git_import`,
which watches its size). A repository imported from elsewhere is made the same way: every branch
and tag of the source fetched into a new bare repository, then the same settings and hook.

Reads are bounded: a dependency file is read only if its size (from the tree listing) is within
``max_file_bytes``, so a pushed gigabyte of zeros (a megabyte packed) costs no memory; its blob id
stands in for its content in the dependency hash, and its build fails naming it
(:func:`size_problem`). Pushes are bounded by git's ``receive.maxInputSize``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import uuid
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nakama
from backend.local.git_import import fetch_source
from nakama.clients.git import git_text, run_git
from nakama.errors import Conflict, InvalidInput, NotFound
from nakama.importing import Imported, ImportSource
from nakama.names import name_problem, validate_project_name
from nakama.planning import ZERO_SHA
from nakama.tagging import is_dependency_file

_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_FILE_MODES = ("100644", "100755")
NAMESPACE = "local"  # path_with_namespace in hook bodies is "local/<project>"
FILE_BYTES_SETTING = (
    "planning.max_dependency_file_bytes, NAKAMA_PLANNING__MAX_DEPENDENCY_FILE_BYTES"
)
PUSH_BYTES_SETTING = "planning.max_push_bytes, NAKAMA_PLANNING__MAX_PUSH_BYTES"
# Dependency files of one commit read at most, together, in units of the per-file bound: a
# hostile push of thousands of files just under it must not add up.
_TOTAL_FILES = 16


def _source_root() -> Path:
    """The directory from which ``import nakama`` works, for the hook's PYTHONPATH."""
    return Path(nakama.__file__).resolve().parent.parent


def _hook_script(python: str) -> str:
    # -S skips site-packages: the hook needs only the standard library and nakama, and starts
    # faster without them. Its compiled modules are kept even where the environment says not
    # to write them: else every push compiles them again (about a third of the hook's time).
    return (
        "#!/bin/sh\n"
        "# Installed by Nakama: sends a GitLab-format Push Hook for each pushed ref.\n"
        f"PYTHONPATH={shlex.quote(str(_source_root()))}\n"
        "export PYTHONPATH\n"
        "unset PYTHONDONTWRITEBYTECODE\n"
        f"exec {shlex.quote(python)} -S -m backend.local.post_receive\n"
    )


def _fast_import_path(path: str) -> str:
    if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in path.split("/")):
        raise InvalidInput(f"invalid file path in repository: {path[:200]!r}")
    if any(c in path for c in '\n"\\') or path.startswith(" "):
        escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return path


def _check_sha(value: str) -> str:
    if not _SHA.match(value):
        raise InvalidInput(f"not a commit id: {value[:80]!r}")
    return value


@dataclass(frozen=True)
class BlobEntry:
    """A regular file of a commit: its path, blob id and size in bytes."""

    path: str
    blob: str
    size: int


def unread(entries: Sequence[BlobEntry], *, max_file_bytes: int) -> list[BlobEntry]:
    """The files too large to read: each over ``max_file_bytes``, and those (in path order)
    past ``_TOTAL_FILES`` times it in total."""
    over, total = [], 0
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.size > max_file_bytes or total + entry.size > _TOTAL_FILES * max_file_bytes:
            over.append(entry)
        else:
            total += entry.size
    return over


def stand_in(entry: BlobEntry) -> bytes:
    """What the dependency hash sees of a file too large to read: its blob id changes with
    its content, so a changed file still changes the hash."""
    return f"nakama: not read, {entry.size} bytes, blob {entry.blob}\n".encode()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def size_problem(entries: Sequence[BlobEntry], *, max_file_bytes: int) -> str | None:
    """Why a build cannot use these dependency files (one too large), or None."""
    over = unread(entries, max_file_bytes=max_file_bytes)
    if not over:
        return None
    first = over[0]
    if first.size > max_file_bytes:
        what = f"{first.path!r} has {first.size} bytes ({_size(first.size)})"
    else:
        what = (
            f"the dependency files have more than {_TOTAL_FILES} times that together "
            f"({first.path!r} and {len(over) - 1} more are past it)"
        )
    more = (
        f" ({len(over) - 1} more files are too)"
        if len(over) > 1 and first.size > max_file_bytes
        else ""
    )
    return (
        f"{what}{more}: a dependency file may have at most {max_file_bytes} bytes "
        f"({_size(max_file_bytes)}; setting {FILE_BYTES_SETTING}). Files named like "
        "dependency files (requirements*.txt, pyproject.toml, lock files) are read at every "
        "push: keep data in files named otherwise"
    )


class LocalForge:
    """Bare repositories under ``repos_dir``, reachable at ``{base_url}/git/<project>.git``."""

    def __init__(
        self,
        *,
        repos_dir: Path,
        base_url: str,
        hook_python: str = sys.executable,
        max_file_bytes: int = 1024 * 1024,
        max_push_bytes: int = 256 * 1024 * 1024,
        import_timeout_s: float = 600.0,
    ) -> None:
        """``max_file_bytes``: a dependency file larger is not read (PlanningSettings);
        ``max_push_bytes``: git's receive.maxInputSize of every repository, and the most an
        import may fetch; ``import_timeout_s``: seconds an import may take."""
        self.import_timeout_s = import_timeout_s
        self.repos_dir = Path(repos_dir)
        self.base_url = base_url.rstrip("/")
        self.hook_python = hook_python
        self.max_file_bytes = max_file_bytes
        self.max_push_bytes = max_push_bytes

    def repo_path(self, project: str) -> Path:
        return self.repos_dir / f"{validate_project_name(project)}.git"

    def clone_url(self, project: str) -> str:
        return f"{self.base_url}/git/{validate_project_name(project)}.git"

    def exists(self, project: str) -> bool:
        return name_problem(project) is None and (self.repo_path(project) / "HEAD").is_file()

    def _existing(self, project: str) -> Path:
        path = self.repo_path(project)
        if not (path / "HEAD").is_file():
            raise NotFound(f"no repository for project {project!r}")
        return path

    def create_repository(
        self,
        project: str,
        *,
        files: Mapping[str, bytes],
        branch: str,
        hook_token: str,
        message: str = "Start from the Nakama starter kit",
        executable: Collection[str] = (),
        project_id: int | None = None,
    ) -> str:
        """Create the repository with one commit holding ``files`` on ``branch``; its sha.

        ``executable`` names files to commit with mode 100755. ``project_id`` is the id hook
        bodies carry (default: a stable number derived from the name). Built in a temporary
        directory and renamed into place, so a repository is either complete or absent.
        """
        final = self.repo_path(project)
        if final.exists():
            raise Conflict(f"a repository for project {project!r} already exists")
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{project}-", dir=self.repos_dir))
        try:
            run_git(["init", "--quiet", "--bare", "--template=", "-b", branch, str(tmp)])
            sha = self._first_commit(
                tmp, files=files, branch=branch, message=message, executable=executable
            )
            self._publish(
                tmp, project=project, branch=branch, hook_token=hook_token, project_id=project_id
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return sha

    def import_repository(
        self,
        project: str,
        *,
        source: ImportSource,
        branch: str | None,
        hook_token: str,
        project_id: int | None = None,
    ) -> Imported:
        """Create the repository from every branch and tag of ``source`` (see
        :mod:`backend.local.git_import`), its HEAD and hook on ``branch`` (None: the source's
        HEAD branch). Built in a temporary directory and renamed into place, as a new one."""
        final = self.repo_path(project)
        if final.exists():
            raise Conflict(f"a repository for project {project!r} already exists")
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{project}-", dir=self.repos_dir))
        try:
            run_git(["init", "--quiet", "--bare", "--template=", str(tmp)])
            chosen, sha, chosen_from = fetch_source(
                tmp,
                source,
                branch=branch,
                timeout_s=self.import_timeout_s,
                max_bytes=self.max_push_bytes,
            )
            self._publish(
                tmp, project=project, branch=chosen, hook_token=hook_token, project_id=project_id
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Imported(branch=chosen, commit=sha, branch_from=chosen_from)

    def _publish(
        self, tmp: Path, *, project: str, branch: str, hook_token: str, project_id: int | None
    ) -> None:
        """Configure the repository built at ``tmp``, give it its hook, rename it into place."""
        for key, value in (
            ("http.receivepack", "true"),
            ("uploadpack.allowAnySHA1InWant", "true"),
            ("receive.advertisePushOptions", "true"),
            ("receive.maxInputSize", str(self.max_push_bytes)),
        ):
            run_git(["config", key, value], git_dir=tmp)
        self._install_hook(
            tmp, project=project, branch=branch, hook_token=hook_token, project_id=project_id
        )
        try:
            os.rename(tmp, self.repo_path(project))
        except OSError as exc:
            raise Conflict(f"a repository for project {project!r} already exists") from exc

    def _first_commit(
        self,
        git_dir: Path,
        *,
        files: Mapping[str, bytes],
        branch: str,
        message: str,
        executable: Collection[str],
    ) -> str:
        """Write blobs, tree and commit in one ``git fast-import`` run: no work tree needed."""
        text = message.encode()
        stream = bytearray(b"commit refs/heads/" + branch.encode() + b"\n")
        stream += b"committer Nakama <nakama@localhost> now\n"
        stream += b"data %d\n%s\n" % (len(text), text)
        for path in sorted(files):
            content = files[path]
            mode = _FILE_MODES[1] if path in executable else _FILE_MODES[0]
            stream += f"M {mode} inline {_fast_import_path(path)}\n".encode()
            stream += b"data %d\n%s\n" % (len(content), content)
        stream += b"done\n"
        run_git(
            ["fast-import", "--quiet", "--date-format=now", "--done"],
            git_dir=git_dir,
            input=bytes(stream),
        )
        return git_text(
            ["rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"], git_dir=git_dir
        )

    def _install_hook(
        self, git_dir: Path, *, project: str, branch: str, hook_token: str, project_id: int | None
    ) -> None:
        hooks = git_dir / "hooks"
        hooks.mkdir(exist_ok=True)
        hook = hooks / "post-receive"
        hook.write_text(_hook_script(self.hook_python))
        hook.chmod(0o755)
        meta = git_dir / "nakama"
        meta.mkdir(mode=0o700)
        fd = os.open(meta / "hook-token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as token_file:
            token_file.write(hook_token)
        if project_id is None:
            project_id = zlib.crc32(project.encode()) & 0x7FFFFFFF
        config = {
            "project": project,
            # The project in the URL lets the receiver check the token before reading a body.
            "urls": [
                f"{self.base_url}/{hook}/{project}" for hook in ("build-image", "code-reload")
            ],
            "instance": self.base_url,
            "project_id": project_id,
            "namespace": NAMESPACE,
            "web_url": f"{self.base_url}/projects/{project}",
            "git_http_url": self.clone_url(project),
            "default_branch": branch,
        }
        (meta / "hook.json").write_text(json.dumps(config, indent=2) + "\n")

    def apply_push_limit(self) -> int:
        """Set receive.maxInputSize on every repository (made before the limit, or with another
        one), at start-up; how many were changed."""
        changed = 0
        for git_dir in sorted(self.repos_dir.glob("*.git")):
            if git_dir.name.startswith(".") or not (git_dir / "HEAD").is_file():
                continue
            current = run_git(
                ["config", "--get", "receive.maxInputSize"], git_dir=git_dir, check=False
            )
            if current.stdout.decode().strip() != str(self.max_push_bytes):
                run_git(
                    ["config", "receive.maxInputSize", str(self.max_push_bytes)], git_dir=git_dir
                )
                changed += 1
        return changed

    def refresh_hooks(self) -> int:
        """Rewrite every repository's post-receive hook that is not today's script, at start-up:
        a hook names the interpreter and the module path it was made with, and an upgrade or a
        new virtual environment changes them; how many were rewritten."""
        script, changed = _hook_script(self.hook_python), 0
        for git_dir in sorted(self.repos_dir.glob("*.git")):
            hook = git_dir / "hooks" / "post-receive"
            if git_dir.name.startswith(".") or not hook.is_file():
                continue
            if hook.read_text(errors="replace") != script:
                tmp = hook.with_name(".post-receive.new")
                tmp.write_text(script)
                tmp.chmod(0o755)
                os.replace(tmp, hook)
                changed += 1
        return changed

    def check_maintainer(self, username: str) -> None:
        """Local repositories have no users of their own: any API token may push."""
        raise InvalidInput(
            "local mode names no maintainer of a repository: leave out 'maintainer' (the "
            "project's owners and developers push with their API tokens)"
        )

    def add_maintainer(self, project: str, username: str) -> None:
        self.check_maintainer(username)

    def set_member_access(
        self, project: str, gitlab_username: str, access_level: int | None
    ) -> None:
        """Nothing to do: local repositories have no per-user access list. Who may fetch or push
        over HTTP is Nakama's own role check (nakama.access), made on every git request."""

    def delete_repository(self, project: str) -> None:
        """Remove the repository; a missing one is fine. It is renamed away first, so it is never
        served half-deleted."""
        path = self.repo_path(project)
        doomed = self.repos_dir / f".del-{project}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed)

    def head(self, project: str, branch: str) -> str | None:
        """The commit at the tip of ``branch``, or None if there is no such branch."""
        proc = run_git(
            ["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"],
            git_dir=self._existing(project),
            check=False,
        )
        sha = proc.stdout.decode().strip()
        return sha if proc.returncode == 0 and sha else None

    def changed_paths(self, project: str, before: str, after: str) -> list[str] | None:
        """Paths that differ between the trees of ``before`` and ``after`` (a rename counts as
        both paths); None when they cannot be compared (a new branch, a missing object)."""
        git_dir = self._existing(project)
        if before == ZERO_SHA or after == ZERO_SHA:
            return None
        proc = run_git(
            [
                "diff-tree",
                "-r",
                "-z",
                "--no-renames",
                "--name-only",
                "--no-commit-id",
                _check_sha(before),
                _check_sha(after),
                "--",
            ],
            git_dir=git_dir,
            check=False,
        )
        if proc.returncode != 0:
            return None
        return sorted({p.decode(errors="surrogateescape") for p in proc.stdout.split(b"\0") if p})

    def files(self, project: str, commit: str, patterns: Iterable[str]) -> list[BlobEntry]:
        """Every regular file at ``commit`` whose path matches one of the fnmatch ``patterns``,
        with its size: nothing is read but the tree."""
        git_dir = self._existing(project)
        wanted = tuple(patterns)
        listing = run_git(
            ["ls-tree", "-r", "-z", "-l", "--full-tree", _check_sha(commit)],
            git_dir=git_dir,
            check=False,
        )
        if listing.returncode != 0:
            raise NotFound(f"commit {commit[:12]} not found in project {project!r}")
        entries: list[BlobEntry] = []
        for entry in listing.stdout.split(b"\0"):
            meta, _, raw_path = entry.partition(b"\t")
            fields = meta.split()
            path = raw_path.decode(errors="surrogateescape")
            if (
                len(fields) == 4
                and fields[0].decode() in _FILE_MODES
                and is_dependency_file(path, wanted)
            ):
                entries.append(BlobEntry(path, fields[2].decode(), int(fields[3])))
        return entries

    def read_files(self, project: str, commit: str, patterns: Iterable[str]) -> dict[str, bytes]:
        """Every regular file at ``commit`` whose path matches one of the fnmatch ``patterns``;
        a file too large to read (:func:`unread`) is its :func:`stand_in`."""
        git_dir = self._existing(project)
        entries = self.files(project, commit, patterns)
        over = unread(entries, max_file_bytes=self.max_file_bytes)
        result = {entry.path: stand_in(entry) for entry in over}
        blobs = [entry for entry in entries if entry.path not in result]
        if not blobs:
            return result
        out = run_git(
            ["cat-file", "--batch"],
            git_dir=git_dir,
            input=b"".join(f"{entry.blob}\n".encode() for entry in blobs),
        ).stdout
        view = memoryview(out)
        pos = 0
        for entry in blobs:
            end = out.index(b"\n", pos)
            size = int(out[pos:end].split()[2])
            result[entry.path] = bytes(view[end + 1 : end + 1 + size])
            pos = end + 1 + size + 1
        return result
