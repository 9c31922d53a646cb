"""The GitOps repository, written through GitLab's API: what Flux applies to the cluster.

Nakama never clones it. Each change is one commit made with the commits API and several file
actions (``POST /projects/:id/repository/commits``), so an app's files appear and disappear
together and Flux never applies half an app. GitLab applies the actions to the branch head of the
moment, so commits of Flux's image automation in between are no conflict; only a file created or
deleted meanwhile is, and then the change is planned again from a fresh read.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nakama.clients.gitlab import GitLabClient
from nakama.errors import Conflict, NotFound, PermanentError
from nakama.logs import get_logger

log = get_logger(__name__)

# A planned commit is re-planned this often when a file it creates or deletes changed meanwhile.
_ATTEMPTS = 3


class GitOpsRepository:
    """Branch ``branch`` of the GitLab project ``project_path``."""

    def __init__(
        self,
        client: GitLabClient,
        *,
        project_path: str,
        branch: str,
        author_name: str,
        author_email: str,
    ) -> None:
        self._client = client
        self.project_path = project_path.strip("/")
        self.branch = branch
        self._author = {"author_name": author_name, "author_email": author_email}
        self._reached = False

    def _project(self) -> Any:
        return self._client.api.projects.get(self.project_path, lazy=True)

    # --- reads -----------------------------------------------------------------------------
    def files_under(self, folder: str) -> set[str]:
        """Paths of every file below ``folder`` on the branch (empty if there is none)."""
        handle = self._project()
        try:
            tree = self._client.call(
                lambda: handle.repository_tree(
                    path=folder, ref=self.branch, recursive=True, get_all=True
                ),
                what=f"list {folder} in {self.project_path}",
            )
        except NotFound:  # no such folder, or no branch yet; but the project must exist
            self._require_project()
            return set()
        return {str(entry["path"]) for entry in tree if entry.get("type") == "blob"}

    def exists(self, path: str) -> bool:
        handle = self._project()
        try:
            self._client.call(
                functools.partial(handle.files.raw, file_path=path, ref=self.branch),
                what=f"read {path} in {self.project_path}",
            )
        except NotFound:
            self._require_project()
            return False
        return True

    def check_reach(self) -> None:
        """Raise :class:`NotFound` saying what to do when the token cannot see the project (a
        create asks this before it makes anything); once it passed, it is not asked again."""
        if not self._reached:
            self._require_project()
            self._reached = True

    def _require_project(self) -> None:
        path = self.project_path
        try:
            self._client.call(lambda: self._client.api.projects.get(path), what=f"get {path}")
        except NotFound as exc:
            raise NotFound(
                f"the GitOps project {path!r} does not exist in GitLab, or Nakama's token may not "
                "see it (GitLab answers 404 for both): make the token's user a Maintainer of it "
                "(docs/cluster-install.md, section GitLab)"
            ) from exc

    def existing(self, paths: Iterable[str], *, folders: Iterable[str] = ()) -> set[str]:
        """Which of ``paths`` exist, and every file below ``folders``: one tree listing per
        folder, one file read for each path outside them."""
        wanted = set(paths)
        found: set[str] = set()
        listed = set(folders)
        for folder in listed:
            found |= self.files_under(folder)
        for path in wanted:
            if not any(path.startswith(f"{folder}/") for folder in listed) and self.exists(path):
                found.add(path)
        return found

    # --- writes ----------------------------------------------------------------------------
    def commit(self, actions: list[dict[str, Any]], *, message: str) -> str:
        """One commit with ``actions`` (GitLab's commit actions) on the branch; its sha."""
        body = {"branch": self.branch, "commit_message": message, "actions": actions}
        body.update(self._author)
        handle = self._project()
        created = self._client.call(
            lambda: handle.commits.create(body),
            what=f"commit {len(actions)} file change(s) to {self.project_path}",
        )
        return str(created.id)

    def ensure_files(
        self, files: Mapping[str, str], *, message: str, folders: Iterable[str] = ()
    ) -> str | None:
        """Create those of ``files`` (path -> text) that do not exist, in one commit; its sha,
        or None when every file exists. Existing files are left as they are: after an app's
        first commit, Flux's image automation owns the image tag in them."""

        def plan() -> list[dict[str, Any]]:
            missing = sorted(set(files) - self.existing(files, folders=folders))
            return [
                {
                    "action": "create",
                    "file_path": path,
                    "content": base64.b64encode(files[path].encode()).decode(),
                    "encoding": "base64",
                }
                for path in missing
            ]

        return self._commit_planned(plan, message=message, done="gitops files committed")

    def remove_files(
        self, paths: Iterable[str], *, message: str, folders: Iterable[str] = ()
    ) -> str | None:
        """Delete ``paths`` and every file below ``folders``, in one commit; its sha, or None
        when there is nothing to delete."""
        wanted = set(paths)
        listed = tuple(folders)

        def plan() -> list[dict[str, Any]]:
            present = sorted(self.existing(wanted, folders=listed))
            return [{"action": "delete", "file_path": path} for path in present]

        return self._commit_planned(plan, message=message, done="gitops files deleted")

    def _commit_planned(
        self, plan: Callable[[], list[dict[str, Any]]], *, message: str, done: str
    ) -> str | None:
        """Commit what ``plan`` reads from the repository now; a commit that clashes with a
        concurrent change is planned again from a fresh read, up to ``_ATTEMPTS`` times."""
        for attempt in range(_ATTEMPTS):
            actions = plan()
            if not actions:
                return None
            try:
                sha = self.commit(actions, message=message)
            except (Conflict, PermanentError) as exc:
                if attempt + 1 == _ATTEMPTS:
                    raise
                log.info("gitops commit re-planned", reason=str(exc)[:200])
                continue
            log.info(done, commit=sha, files=len(actions))
            return sha
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
