"""GitLab-format Push Hook bodies and delivery headers for local mode, as pure functions.

Local mode's post-receive hook speaks the same webhook dialect as GitLab so that one receiver serves
both modes. Everything here takes plain values (commits parsed from ``git log``, the project's
identity, uuids) and returns plain values: no git, network or clock, so it is table-testable
against the reference payloads in ``shared/reference/gitlab/webhooks/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from nakama.planning import TAG_PREFIX, ZERO_SHA

MAX_COMMITS = 20  # GitLab sends the newest 20 commits of a push; total_commits_count has the rest.
# The receiver's default limit (ReceiverSettings.max_body_bytes), for a hook.json without one.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Characters of each commit message kept when the messages must be cut for a body to fit.
SHORT_MESSAGE = 1000
PUSH_HOOK = "Push Hook"
TAG_PUSH_HOOK = "Tag Push Hook"

_HEADER = re.compile(rb"^\n?([0-9a-f]{40,64})\x1f")
_STATUS = re.compile(rb"^\n?([ACDMRTUXB])[0-9]*$")
# The ``git log`` format that :func:`parse_git_log` reads; use with ``-z --name-status``.
GIT_LOG_FORMAT = "%H%x1f%aI%x1f%an%x1f%ae%x1f%B"


class CommitInfo(NamedTuple):
    """One commit as a push hook shows it; paths as GitLab classifies them against the first
    parent (a renamed file appears under its new path in ``added`` only)."""

    sha: str
    message: str
    timestamp: str  # ISO 8601 author date with offset, e.g. 2024-05-26T10:00:00+02:00
    author_name: str
    author_email: str
    added: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class ProjectInfo(NamedTuple):
    """The project fields of a hook body."""

    id: int
    name: str
    namespace: str
    web_url: str
    git_http_url: str
    default_branch: str
    description: str = ""


class Pusher(NamedTuple):
    """Who pushed (local mode knows only the HTTP user name)."""

    name: str
    id: int = 0
    email: str | None = None


Paths = tuple[str, ...]


def classify_changes(entries: Iterable[tuple[str, Sequence[str]]]) -> tuple[Paths, Paths, Paths]:
    """Sort ``(status letter, paths)`` pairs from ``--name-status -M`` into (added, modified,
    removed) the way GitLab does: renames and copies count as an added new path only."""
    added: list[str] = []
    modified: list[str] = []
    removed: list[str] = []
    for status, paths in entries:
        if status in ("R", "C"):
            added.append(paths[-1])
        elif status == "A":
            added.append(paths[0])
        elif status == "D":
            removed.append(paths[0])
        else:
            modified.append(paths[0])
    return tuple(added), tuple(modified), tuple(removed)


def parse_git_log(raw: bytes) -> list[CommitInfo]:
    """Parse ``git log -z --name-status -M --format=GIT_LOG_FORMAT`` output, newest first as git
    prints it. Tokens are NUL-separated; a status token is followed by one path (two for R/C)."""
    tokens = raw.split(b"\0")
    commits: list[CommitInfo] = []
    header: list[str] | None = None
    changes: list[tuple[str, list[str]]] = []

    def flush() -> None:
        if header is not None:
            sha, stamp, name, email, message = header
            added, modified, removed = classify_changes(changes)
            commits.append(CommitInfo(sha, message, stamp, name, email, added, modified, removed))

    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        status = _STATUS.match(token)
        if status and header is not None:
            letter = status.group(1).decode()
            count = 2 if letter in ("R", "C") else 1
            paths = [t.decode(errors="surrogateescape") for t in tokens[i : i + count]]
            i += count
            changes.append((letter, paths))
        elif _HEADER.match(token):
            flush()
            fields = token.lstrip(b"\n").decode(errors="replace").split("\x1f", 4)
            header = fields + [""] * (5 - len(fields))
            changes = []
    flush()
    return commits


def commit_title(message: str) -> str:
    """GitLab's commit title: the first line, cut at a word near 80 characters if 100 or longer."""
    first = message.strip().split("\n", 1)[0] if message.strip() else ""
    if len(first) < 100:
        return first
    cut = first.rfind(" ", 0, 80)
    return first[: cut if cut > 0 else 80] + "…"


def parse_push_options(options: Iterable[str]) -> dict[str, Any]:
    """``git push -o ci.skip -o ci.variable=A=1`` → ``{"ci": {"skip": True, "variable": ...}}``."""
    result: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            continue
        entry: Any = value if sep else True
        bucket = result.setdefault(section, {})
        if name in bucket and isinstance(entry, str):
            previous = bucket[name]
            bucket[name] = [*previous, entry] if isinstance(previous, list) else [previous, entry]
        else:
            bucket[name] = entry
    return result


def _project_fields(project: ProjectInfo) -> dict[str, Any]:
    # Local mode serves git over HTTP only, so the ssh-style fields carry the HTTP clone URL.
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "web_url": project.web_url,
        "avatar_url": None,
        "git_ssh_url": project.git_http_url,
        "git_http_url": project.git_http_url,
        "namespace": project.namespace,
        "visibility_level": 0,
        "path_with_namespace": f"{project.namespace}/{project.name}",
        "default_branch": project.default_branch,
        "ci_config_path": None,
        "homepage": project.web_url,
        "url": project.git_http_url,
        "ssh_url": project.git_http_url,
        "http_url": project.git_http_url,
    }


def _commit_fields(commit: CommitInfo, *, web_url: str) -> dict[str, Any]:
    return {
        "id": commit.sha,
        "message": commit.message,
        "title": commit_title(commit.message),
        "timestamp": commit.timestamp,
        "url": f"{web_url}/-/commit/{commit.sha}",
        "author": {"name": commit.author_name, "email": commit.author_email},
        "added": list(commit.added),
        "modified": list(commit.modified),
        "removed": list(commit.removed),
    }


def build_push_payload(
    *,
    project: ProjectInfo,
    pusher: Pusher,
    ref: str,
    before: str,
    after: str,
    commits: Sequence[CommitInfo],
    total_commits_count: int | None = None,
    checkout_sha: str | None = None,
    tag_message: str | None = None,
    push_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Push Hook (or Tag Push Hook for ``refs/tags/*``) body.

    ``commits`` are the pushed commits oldest → newest (only the newest 20 are sent);
    ``total_commits_count`` defaults to ``len(commits)``; ``checkout_sha`` defaults to ``after``
    (pass the dereferenced commit for an annotated tag). A deletion sends no commits.
    """
    is_tag = ref.startswith(TAG_PREFIX)
    deleted = after == ZERO_SHA
    if deleted:
        commits, total, checkout = [], 0, None
    else:
        total = len(commits) if total_commits_count is None else total_commits_count
        checkout = checkout_sha or after
    kind = "tag_push" if is_tag else "push"
    return {
        "object_kind": kind,
        "event_name": kind,
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": False,
        "checkout_sha": checkout,
        "message": tag_message if is_tag else None,
        "user_id": pusher.id,
        "user_name": pusher.name,
        "user_username": pusher.name,
        "user_email": pusher.email,
        "user_avatar": None,
        "project_id": project.id,
        "project": _project_fields(project),
        "commits": [_commit_fields(c, web_url=project.web_url) for c in commits[-MAX_COMMITS:]],
        "total_commits_count": total,
        "push_options": dict(push_options or {}),
        "repository": {
            "name": project.name,
            "url": project.git_http_url,
            "description": project.description,
            "homepage": project.web_url,
            "git_http_url": project.git_http_url,
            "git_ssh_url": project.git_http_url,
            "visibility_level": 0,
        },
    }


def _without_file_lists(payload: dict[str, Any]) -> dict[str, Any]:
    commits = [{**c, "added": [], "modified": [], "removed": []} for c in payload["commits"]]
    return {**payload, "commits": commits}


def _short_messages(payload: dict[str, Any]) -> dict[str, Any]:
    commits = [{**c, "message": c["message"][:SHORT_MESSAGE]} for c in payload["commits"]]
    return {**payload, "commits": commits}


def _without_commits(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "commits": []}


_TRIMS = (
    ("commits.added/modified/removed", _without_file_lists),
    ("commits.message", _short_messages),
    ("commits", _without_commits),
)


def encode_within(payload: Mapping[str, Any], *, max_bytes: int) -> tuple[bytes, tuple[str, ...]]:
    """The JSON body of ``payload``, cut to fit in ``max_bytes`` where it would not; and what
    was left out.

    A push of many files (a data set) makes the commits' file lists longer than the receiver
    takes, and a refused hook leaves the push undeployed (review M8). The receiver needs only
    the ref, ``before``, ``after`` and the project: it asks git for the changed files. So, as
    far as needed and in this order, the file lists are emptied, the messages cut, the commits
    left out (``total_commits_count`` still counts them). What was left out is listed under
    ``"nakama": {"omitted": [...]}`` so that no reader takes the lists for complete.
    """
    current = dict(payload)
    body = json.dumps(current).encode()
    omitted: list[str] = []
    for what, trim in _TRIMS:
        if len(body) <= max_bytes:
            break
        current = trim(current)
        omitted.append(what)
        note = {"omitted": list(omitted), "because": f"the body would exceed {max_bytes} bytes"}
        body = json.dumps({**current, "nakama": note}).encode()
    return body, tuple(omitted)


def delivery_headers(
    payload: Mapping[str, Any],
    *,
    url: str,
    token: str,
    instance: str,
    event_uuid: str,
    webhook_uuid: str,
    idempotency_key: str,
    version: str,
) -> dict[str, str]:
    """The headers of one delivery of ``payload`` to ``url``.

    ``event_uuid`` is shared by every URL the event goes to; ``webhook_uuid`` is new per request;
    ``idempotency_key`` is one per event and URL, the same for every re-send of it (GitLab's).
    """
    event = TAG_PUSH_HOOK if payload.get("object_kind") == "tag_push" else PUSH_HOOK
    return {
        "Content-Type": "application/json",
        "User-Agent": f"Nakama/{version}",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Instance": instance,
        "X-Gitlab-Event-UUID": event_uuid,
        "X-Gitlab-Webhook-UUID": webhook_uuid,
        "Idempotency-Key": idempotency_key,
    }
