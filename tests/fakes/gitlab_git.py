"""Git plumbing for the GitLab fake: real bare repositories behind GitLab's repository API.

Each function takes a bare repository's path and returns GitLab-shaped values (commit entities,
compare results, tree entries), so the fake's commits, compares and file reads are real git.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nakama.clients.git import git_text, run_git

ZERO_SHA = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_FIELD = "\x1f"
_RECORD = "\x1e"
_COMMIT_FORMAT = _FIELD.join(["%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%B"]) + _RECORD


class GitApiError(Exception):
    """A repository request GitLab would refuse: ``status`` and GitLab's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# GitLab's default branch protection for pushes over HTTP, as its pre-receive check answers
# (``Gitlab::Checks``' messages): Maintainers push to the protected branch, nobody force-pushes
# or deletes it. The fake's git route sets FAKE_GITLAB_LEVEL (the pusher's access level) and
# FAKE_GITLAB_PROTECTED (the default branch), and FAKE_GITLAB_FORCE when a Maintainer allowed
# force pushes to it; a push without them (git on the bare repository
# itself) is not checked.
PRE_RECEIVE = """#!/bin/sh
[ -n "$FAKE_GITLAB_PROTECTED" ] || exit 0
zero=0000000000000000000000000000000000000000
while read -r old new ref; do
  [ "$ref" = "refs/heads/$FAKE_GITLAB_PROTECTED" ] || continue
  if [ "${FAKE_GITLAB_LEVEL:-0}" -lt 40 ]; then
    echo "GitLab: You are not allowed to push code to protected branches on this project."
    exit 1
  fi
  if [ "$new" = "$zero" ]; then
    echo "GitLab: You can only delete protected branches using the web interface."
    exit 1
  fi
  if [ -z "$FAKE_GITLAB_FORCE" ] && [ "$old" != "$zero" ] \
      && ! git merge-base --is-ancestor "$old" "$new"; then
    echo "GitLab: You are not allowed to force push code to a protected branch on this project."
    exit 1
  fi
done
exit 0
"""


def init_bare(path: Path, *, default_branch: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--bare", "--template=", "-b", default_branch, str(path)])
    for key, value in (("http.receivepack", "true"), ("uploadpack.allowAnySHA1InWant", "true")):
        run_git(["config", key, value], git_dir=path)
    hook = path / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)


def resolve(repo: Path, rev: str) -> str | None:
    """The commit ``rev`` (sha, branch or tag) names, or None."""
    if not rev or rev.startswith("-"):
        return None
    proc = run_git(
        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], git_dir=repo, check=False
    )
    sha = proc.stdout.decode().strip()
    return sha if proc.returncode == 0 and sha else None


def branch_head(repo: Path, branch: str) -> str | None:
    return resolve(repo, f"refs/heads/{branch}")


def refs(repo: Path) -> dict[str, str]:
    """Every branch and tag with the object it points to."""
    out = git_text(
        ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"],
        git_dir=repo,
    )
    pairs = (line.split(" ", 1) for line in out.splitlines() if line)
    return {ref: sha for ref, sha in pairs}


def _commits(raw: str, *, web_url: str) -> list[dict[str, Any]]:
    result = []
    for record in raw.split(_RECORD):
        record = record.lstrip("\n")
        if not record:
            continue
        sha, parents, an, ae, ad, cn, ce, cd, message = record.split(_FIELD, 8)
        title = message.strip().split("\n", 1)[0] if message.strip() else ""
        result.append(
            {
                "id": sha,
                "short_id": sha[:8],
                "created_at": cd,
                "parent_ids": parents.split(),
                "title": title,
                "message": message,
                "author_name": an,
                "author_email": ae,
                "authored_date": ad,
                "committer_name": cn,
                "committer_email": ce,
                "committed_date": cd,
                "trailers": {},
                "extended_trailers": {},
                "web_url": f"{web_url}/-/commit/{sha}",
            }
        )
    return result


def commit_entity(repo: Path, sha: str, *, web_url: str) -> dict[str, Any]:
    raw = git_text(["show", "-s", f"--format={_COMMIT_FORMAT}", sha], git_dir=repo)
    return _commits(raw, web_url=web_url)[0]


def commits_between(repo: Path, base: str, head: str, *, web_url: str) -> list[dict[str, Any]]:
    """``git log base..head``, oldest first, as GitLab commit entities."""
    raw = run_git(
        ["log", "--reverse", f"--format={_COMMIT_FORMAT}", f"{base}..{head}", "--"], git_dir=repo
    ).stdout.decode(errors="replace")
    return _commits(raw, web_url=web_url)


def list_tree(repo: Path, ref: str) -> dict[str, tuple[str, str]]:
    """path → (mode, blob sha) of every file at ``ref``."""
    out = run_git(["ls-tree", "-r", "-z", "--full-tree", ref], git_dir=repo).stdout
    files: dict[str, tuple[str, str]] = {}
    for entry in out.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        if meta:
            mode, _kind, sha = meta.decode().split()
            files[path.decode(errors="surrogateescape")] = (mode, sha)
    return files


def tree_entries(repo: Path, ref: str, *, path: str, recursive: bool) -> list[dict[str, Any]]:
    """``GET /repository/tree`` entries: id, name, type, path, mode."""
    args = ["ls-tree", "-z", "--full-tree"]
    if recursive:
        args += ["-r", "-t"]
    args.append(ref)
    if path:
        args += ["--", path.rstrip("/") + "/"]
    out = run_git(args, git_dir=repo).stdout
    entries = []
    for entry in out.split(b"\0"):
        meta, _, raw_path = entry.partition(b"\t")
        if not meta:
            continue
        mode, kind, sha = meta.decode().split()
        full = raw_path.decode(errors="surrogateescape")
        entries.append(
            {"id": sha, "name": full.rsplit("/", 1)[-1], "type": kind, "path": full, "mode": mode}
        )
    return entries


def read_blob(repo: Path, sha: str) -> bytes:
    return run_git(["cat-file", "blob", sha], git_dir=repo).stdout


def _content(action: dict[str, Any]) -> bytes:
    content = action.get("content")
    if content is None:
        return b""
    if action.get("encoding", "text") == "base64":
        try:
            return base64.b64decode(str(content), validate=True)
        except binascii.Error as exc:
            raise GitApiError(400, "content is not valid base64") from exc
    return str(content).encode()


def _check_path(path: Any) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or any(part in ("", ".", "..", ".git") for part in path.split("/"))
        or any(c in path for c in '\n"\\\0')
    ):
        raise GitApiError(400, f"Your changes could not be committed, invalid path: {path!r}")
    return path


@dataclass(frozen=True)
class Author:
    name: str
    email: str


def apply_actions(
    repo: Path,
    *,
    branch: str,
    base: str | None,
    old_head: str | None,
    actions: list[dict[str, Any]],
    message: str,
    author: Author,
) -> str:
    """Make one commit from GitLab commit ``actions`` on top of ``base`` and move ``branch`` to
    it, only if the branch is still at ``old_head`` (None: absent); its sha."""
    files = list_tree(repo, base) if base else {}
    new_blobs: dict[str, bytes] = {}
    for action in actions:
        kind = action.get("action")
        path = _check_path(action.get("file_path"))
        exists = path in files
        if kind == "create" and exists:
            raise GitApiError(400, "A file with this name already exists")
        if kind in ("update", "delete", "chmod") and not exists:
            raise GitApiError(400, "A file with this name doesn't exist")
        if kind in ("create", "update"):
            mode = files[path][0] if exists else "100644"
            new_blobs[path] = _content(action)
            files[path] = (mode, "")
        elif kind == "delete":
            del files[path]
            new_blobs.pop(path, None)
        elif kind == "move":
            old = _check_path(action.get("previous_path"))
            if old not in files:
                raise GitApiError(400, "A file with this name doesn't exist")
            if exists:
                raise GitApiError(400, "A file with this name already exists")
            files[path] = files.pop(old)
            if old in new_blobs:
                new_blobs[path] = new_blobs.pop(old)
            if action.get("content") is not None:
                new_blobs[path] = _content(action)
        elif kind == "chmod":
            mode = "100755" if action.get("execute_filemode") else "100644"
            files[path] = (mode, files[path][1])
        else:
            raise GitApiError(400, "actions[action] does not have a valid value")
    text = message.encode()
    ident = f"{author.name} <{author.email}> now\n".encode()
    temp_ref = f"refs/fake-gitlab/{uuid.uuid4().hex}"
    stream = bytearray(f"commit {temp_ref}\n".encode())
    stream += b"author " + ident + b"committer " + ident
    stream += b"data %d\n%s\n" % (len(text), text)
    if base:
        stream += f"from {base}\n".encode()
    stream += b"deleteall\n"
    for path in sorted(files):
        mode, sha = files[path]
        if path in new_blobs:
            content = new_blobs[path]
            stream += f"M {mode} inline {path}\n".encode() + b"data %d\n%s\n" % (
                len(content),
                content,
            )
        else:
            stream += f"M {mode} {sha} {path}\n".encode()
    stream += b"done\n"
    run_git(
        ["fast-import", "--quiet", "--date-format=now", "--done"], git_dir=repo, input=bytes(stream)
    )
    sha = git_text(["rev-parse", temp_ref], git_dir=repo)
    try:
        moved = run_git(
            ["update-ref", f"refs/heads/{branch}", sha, old_head or ZERO_SHA],
            git_dir=repo,
            check=False,
        )
    finally:
        run_git(["update-ref", "-d", temp_ref], git_dir=repo, check=False)
    if moved.returncode != 0:
        raise GitApiError(
            400, f"Could not update refs/heads/{branch}. Please refresh and try again."
        )
    return sha


def stats(repo: Path, base: str | None, head: str) -> dict[str, int]:
    """Lines added and deleted by ``head`` relative to ``base`` (the empty tree if None)."""
    out = git_text(["diff", "--numstat", base or EMPTY_TREE, head, "--"], git_dir=repo)
    added = deleted = 0
    for line in out.splitlines():
        a, d, _ = line.split("\t", 2)
        added += int(a) if a.isdigit() else 0
        deleted += int(d) if d.isdigit() else 0
    return {"additions": added, "deletions": deleted, "total": added + deleted}


def file_entry(repo: Path, commit: str, path: str) -> tuple[str, str] | None:
    """(mode, blob sha) of the file at ``path`` in ``commit``, or None."""
    out = run_git(["ls-tree", "-z", "--full-tree", commit, "--", path], git_dir=repo).stdout
    for entry in out.split(b"\0"):
        meta, _, found = entry.partition(b"\t")
        if meta and found.decode(errors="surrogateescape") == path:
            mode, kind, sha = meta.decode().split()
            if kind == "blob":
                return mode, sha
    return None


def last_commit(repo: Path, commit: str, path: str) -> str:
    return git_text(["log", "-1", "--format=%H", commit, "--", path], git_dir=repo)


def _patch(repo: Path, base: str, head: str, paths: list[str]) -> str:
    out = run_git(
        ["diff", "--no-color", "-M", base, head, "--", *paths], git_dir=repo, check=False
    ).stdout.decode(errors="replace")
    start = out.find("\n@@")
    return out[start + 1 :] if start >= 0 else ""


def compare(
    repo: Path,
    base_rev: str,
    head_rev: str,
    *,
    straight: bool,
    web_url: str,
    max_files: int = 1000,
) -> dict[str, Any]:
    """GitLab's ``API::Entities::Compare`` for ``from`` → ``to``; GitApiError 404 for an
    unknown ref. ``straight`` diffs the two trees; otherwise merge-base(from, to) → to.

    The entity's ``diffs`` are ``compare.diffs(expanded: true).diffs.to_a`` under the instance's
    diff limits and ``compare_timeout`` is ``compare.diffs.diffs.overflow?``
    (``lib/api/entities/compare.rb``): past ``diff_max_files`` files (1000 by default) the list
    is cut there and ``compare_timeout`` is true."""
    base, head = resolve(repo, base_rev), resolve(repo, head_rev)
    if base is None or head is None:
        raise GitApiError(404, "404 Ref Not Found")
    start = base
    if not straight:
        found = run_git(["merge-base", base, head], git_dir=repo, check=False)
        start = found.stdout.decode().strip() or base
    raw = run_git(["diff-tree", "-r", "-z", "-M", "--raw", start, head], git_dir=repo).stdout
    tokens = raw.split(b"\0")
    diffs: list[dict[str, Any]] = []
    i = 0
    overflow = False
    while i < len(tokens):
        meta = tokens[i].decode()
        i += 1
        if not meta.startswith(":"):
            continue
        a_mode, b_mode, _a, _b, status = meta[1:].split()
        count = 2 if status[0] in "RC" else 1
        paths = [t.decode(errors="surrogateescape") for t in tokens[i : i + count]]
        i += count
        old, new = paths[0], paths[-1]
        if len(diffs) >= max_files:
            overflow = True
            break
        diffs.append(
            {
                "old_path": old,
                "new_path": new,
                "a_mode": a_mode,
                "b_mode": b_mode,
                "diff": _patch(repo, start, head, sorted({old, new})),
                "new_file": status[0] == "A",
                "renamed_file": status[0] == "R",
                "deleted_file": status[0] == "D",
                "generated_file": False,
            }
        )
    commits = commits_between(repo, base, head, web_url=web_url)
    return {
        "commit": commits[-1] if commits else None,
        "commits": commits,
        "diffs": diffs,
        "compare_timeout": overflow,
        "compare_same_ref": base_rev == head_rev,
        "web_url": f"{web_url}/-/compare/{base}...{head}",
    }


_IMPORT_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "$FAKE_IMPORT_USER" "$FAKE_IMPORT_PASSWORD"; }; f'
)


def import_repository(
    repo: Path, url: str, *, credentials: tuple[str, str] | None, timeout: float = 120.0
) -> str | None:
    """What GitLab's "Repository by URL" import does with git: every branch and tag of ``url``
    into the (empty) bare repository ``repo``; returns the source's HEAD branch (None: it names
    none). The credentials reach git through a credential helper reading the environment.
    GitApiError(422, git's message) when git fails."""
    env = {
        "GIT_ALLOW_PROTOCOL": "http:https",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
    }
    if credentials is not None:
        env |= {
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_1": "credential.helper",
            "GIT_CONFIG_VALUE_1": _IMPORT_HELPER,
            "FAKE_IMPORT_USER": credentials[0],
            "FAKE_IMPORT_PASSWORD": credentials[1],
        }
    listing = run_git(["ls-remote", "--symref", url], env=env, timeout=timeout, check=False)
    if listing.returncode != 0:
        raise GitApiError(422, listing.stderr.decode(errors="replace").strip())
    head = None
    for line in listing.stdout.decode(errors="replace").splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: refs/heads/") and ref == "HEAD":
            head = left.removeprefix("ref: refs/heads/").strip()
    fetched = run_git(
        ["fetch", "--quiet", "--no-write-fetch-head", url,
         "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        git_dir=repo,
        env=env,
        timeout=timeout,
        check=False,
    )  # fmt: skip
    if fetched.returncode != 0:
        raise GitApiError(422, fetched.stderr.decode(errors="replace").strip())
    if head is not None and branch_head(repo, head) is not None:
        run_git(["symbolic-ref", "HEAD", f"refs/heads/{head}"], git_dir=repo)
        return head
    return None


def set_head(repo: Path, branch: str) -> None:
    """Point HEAD at ``branch`` (GitLab's "change default branch")."""
    run_git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], git_dir=repo)
