"""Cluster mode's forge: each app's repository is a private project in one GitLab group.

It does through GitLab's REST API what :class:`backend.local.forge.LocalForge` does with git on
disk: a repository created with the starter kit as one commit (or imported from an existing one
by GitLab's "Repository by URL" import, which runs asynchronously), two push hooks pointing at the
receiver (``/build-image/<project>`` and ``/code-reload/<project>``), heads, compares and
dependency-file reads for the push planner. Every call goes through
:meth:`nakama.clients.gitlab.GitLabClient.call`, so retries and error translation happen in one
place.

What real GitLab does that this relies on or works around:

* Hooks to localhost or the local network are refused (422 "Invalid url given") unless an
  administrator allows them; :meth:`GitLabForge.check_hook_url` tries the receiver's URL once on
  the pipelines project, so that a create fails before anything is made.
* ``default_branch`` of ``POST /projects`` applies to an initialized repository only; an empty
  one gets the instance's default branch name, so the deploy branch is made the default
  explicitly after the first commit.
* A user with a higher inherited role (an Owner of the group) cannot be made a project
  Maintainer (400 "should be greater than or equal to ... inherited membership"): they have the
  access already.
* Deleting a project may only mark it for deletion (and rename it, freeing the path), keeping
  its hooks and deploy tokens for days: they are removed first.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from nakama.clients.gitlab import GitLabClient
from nakama.errors import (
    Conflict,
    InvalidInput,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.importing import Imported, ImportSource, scrub, url_with_credentials
from nakama.logs import get_logger
from nakama.names import validate_project_name
from nakama.planning import ZERO_SHA
from nakama.tagging import is_dependency_file

log = get_logger(__name__)

MAINTAINER = 40  # gitlab.const.AccessLevel.MAINTAINER
# Levels a project member can have (Gitlab::Access): Guest, Planner (17.7+), Reporter, Security
# Manager (newest), Developer, Maintainer, Owner. 0 and 5 (Minimal) are no project roles.
PROJECT_ACCESS_LEVELS = (10, 15, 20, 25, 30, 40, 50)
HOOK_PATHS = ("/build-image", "/code-reload")
# GitLab's compare API silently cuts its diff list at the instance's diff_max_files (default
# 1000); a list this long may be incomplete, so the change set counts as unknown.
DIFF_FILES_LIMIT = 1000
# Hooks fire on pushes only; every other trigger is switched off explicitly.
_OTHER_EVENTS = tuple(
    f"{name}_events"
    for name in ("tag_push", "merge_requests", "issues", "note", "pipeline", "job", "wiki_page")
)
_FILE_MODES = ("100644", "100755")
_SHA = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class HookStatus:
    """One project hook as GitLab reports it; ``alert_status`` says whether it still fires."""

    id: int
    url: str
    alert_status: str  # executable, temporarily_disabled or disabled
    disabled_until: datetime | None
    push_events: bool
    branch_filter: str | None

    @property
    def delivering(self) -> bool:
        return self.alert_status == "executable"


def _inherited_higher(exc: BaseException) -> bool:
    """GitLab's 400 for a project role below the user's role from a group (``Member``'s
    ``higher_access_level_than_group``)."""
    return "inherited membership" in str(exc)


def _check_sha(value: str) -> str:
    if not _SHA.match(value):
        raise InvalidInput(f"not a commit id: {value[:80]!r}")
    return value


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def project_spec(project: str, *, namespace_id: int, branch: str) -> dict[str, Any]:
    """``POST /projects``: a private project named for the app, empty, in the group."""
    return {
        "name": project,
        "path": project,
        "namespace_id": namespace_id,
        "default_branch": branch,
        "visibility": "private",
        "initialize_with_readme": False,
    }


def starter_commit(files: Mapping[str, bytes], branch: str, message: str) -> dict[str, Any]:
    """``POST /repository/commits``: every file in one commit, base64 so any bytes survive."""
    actions = [
        {
            "action": "create",
            "file_path": name,
            "content": base64.b64encode(files[name]).decode(),
            "encoding": "base64",
        }
        for name in sorted(files)
    ]
    return {"branch": branch, "commit_message": message, "actions": actions}


def is_receiver_hook(url: str, project: str) -> bool:
    """Whether ``url`` is one of Nakama's push hooks for ``project``: ``…/build-image/<project>``
    or, as hooks made before had it, ``…/build-image`` (and the same for ``/code-reload``)."""
    path = urlsplit(url).path.rstrip("/")
    return path.endswith(HOOK_PATHS) or path.endswith(tuple(f"{p}/{project}" for p in HOOK_PATHS))


def hook_spec(url: str, *, token: str, branch: str) -> dict[str, Any]:
    """``POST /hooks``: push events of ``branch`` only, with the token, TLS verified."""
    return {
        **dict.fromkeys(_OTHER_EVENTS, False),
        "url": url,
        "token": token,
        "push_events": True,
        "push_events_branch_filter": branch,
        "branch_filter_strategy": "wildcard",
        "enable_ssl_verification": True,
    }


class GitLabForge:
    """App repositories as ``<settings.group>/<project>`` on the GitLab behind ``client``.

    ``hook_base_url`` is where GitLab reaches Nakama's receiver (the hooks go to
    ``{hook_base_url}/build-image/<project>`` and ``{hook_base_url}/code-reload/<project>``:
    with the project in the URL the receiver checks the token before it reads a body).
    """

    def __init__(
        self,
        client: GitLabClient,
        *,
        hook_base_url: str,
        import_timeout_s: float = 600.0,
        import_poll_s: float = 1.0,
    ) -> None:
        """``import_timeout_s``: seconds GitLab may take to import a repository by URL;
        ``import_poll_s``: seconds between two looks at its import status."""
        self.import_timeout_s = import_timeout_s
        self.import_poll_s = import_poll_s
        self._client = client
        self._api = client.api
        self.group = client.settings.group.strip("/")
        self.hook_base_url = hook_base_url.rstrip("/")
        self._group_id: int | None = None
        self._hook_url_ok = False

    @property
    def client(self) -> GitLabClient:
        """The GitLab client this forge calls through (shared with the other adapters)."""
        return self._client

    def project_path(self, project: str) -> str:
        return f"{self.group}/{validate_project_name(project)}"

    def clone_url(self, project: str) -> str:
        return f"{self._client.settings.url.rstrip('/')}/{self.project_path(project)}.git"

    def _project(self, project: str) -> Any:
        """A handle for API calls; no request is made until one is used."""
        return self._api.projects.get(self.project_path(project), lazy=True)

    def _require_project(self, project: str) -> None:
        path = self.project_path(project)
        self._client.call(lambda: self._api.projects.get(path), what=f"get project {path}")

    def _namespace_id(self) -> int:
        if self._group_id is None:
            group = self._client.call(
                lambda: self._api.groups.get(self.group), what=f"get group {self.group}"
            )
            self._group_id = int(group.id)
        return self._group_id

    def check_hook_url(self) -> None:
        """Fail with what to do if GitLab refuses the receiver's URL as a hook URL (it refuses
        localhost and the local network unless an administrator allows them), before anything is
        made: a hook with every event off is added to the pipelines project and removed at once.
        Once it passed, it is not tried again. Where the token may not add hooks to the
        pipelines project nothing is checked (creating the app's hooks will tell)."""
        if self._hook_url_ok:
            return
        where = self._client.settings.pipelines_project.strip("/")
        handle = self._api.projects.get(where, lazy=True)
        spec = {**hook_spec(f"{self.hook_base_url}/build-image", token="", branch=""),
                "push_events": False}  # fmt: skip
        del spec["token"], spec["push_events_branch_filter"], spec["branch_filter_strategy"]
        try:
            hook = self._client.call(
                functools.partial(handle.hooks.create, spec),
                what=f"check that GitLab accepts hooks to {self.hook_base_url}",
            )
        except (NotFound, Unauthorized) as exc:
            log.info("hook url not checked", reason=str(exc)[:200])
            return
        except PermanentError as exc:
            if "Invalid url given" in str(exc):
                raise InvalidInput(
                    f"GitLab refuses webhooks to {self.hook_base_url}, so no app can get its "
                    f"push hooks: {exc}"
                ) from exc
            raise
        with contextlib.suppress(NakamaError):
            self._client.call(
                lambda: handle.hooks.delete(hook.id), what=f"remove the check hook of {where}"
            )
        self._hook_url_ok = True

    def _taken(self, project: str) -> Conflict:
        """The Conflict for a name GitLab has a project for: one marked for deletion (where
        GitLab keeps the path until it deletes it) says so."""
        path = self.project_path(project)
        try:
            found = self._client.call(lambda: self._api.projects.get(path), what=f"get {path}")
        except NakamaError:
            return Conflict(f"a repository for project {project!r} already exists")
        marked = found.attributes.get("marked_for_deletion_on") or found.attributes.get(
            "marked_for_deletion_at"
        )
        if marked:
            return Conflict(
                f"project {project!r} was deleted, but GitLab keeps its repository {path} until "
                f"it removes it for good (marked for deletion on {str(marked)[:10]}); the name "
                "is free once it is gone, or when a GitLab administrator deletes it now"
            )
        return Conflict(f"a repository for project {project!r} already exists")

    # --- create and delete ----------------------------------------------------------------
    def create_repository(
        self,
        project: str,
        *,
        files: Mapping[str, bytes],
        branch: str,
        hook_token: str,
        message: str = "Start from the Nakama starter kit",
    ) -> str:
        """Create the private project with ``files`` as one commit on ``branch`` and its two
        push hooks; return the commit's sha. On failure the half-made project is deleted, so a
        repository is either complete or absent."""
        path = self.project_path(project)
        spec = project_spec(project, namespace_id=self._namespace_id(), branch=branch)
        self.check_hook_url()
        try:
            created = self._client.call(
                lambda: self._api.projects.create(spec), what=f"create project {path}"
            )
        except Conflict as exc:
            raise self._taken(project) from exc
        try:
            commit = self._client.call(
                lambda: created.commits.create(starter_commit(files, branch, message)),
                what=f"commit the starter kit to {path}",
            )
            if str(created.attributes.get("default_branch") or "") != branch:
                body = {"default_branch": branch}
                self._client.call(
                    lambda: self._api.projects.update(created.id, body),
                    what=f"make {branch} the default branch of {path}",
                )
            for suffix in HOOK_PATHS:
                url = f"{self.hook_base_url}{suffix}/{project}"
                hook = hook_spec(url, token=hook_token, branch=branch)
                self._client.call(
                    functools.partial(created.hooks.create, hook),
                    what=f"add hook {hook['url']} to {path}",
                )
        except BaseException:
            with contextlib.suppress(NakamaError):
                self.delete_repository(project)
            raise
        return str(commit.id)

    def import_repository(
        self, project: str, *, source: ImportSource, branch: str | None, hook_token: str
    ) -> Imported:
        """Create the private project by GitLab's "Repository by URL" import (``import_url``,
        the token in its user part as GitLab documents; it never leaves this call otherwise),
        wait for the import (``import_status`` scheduled, started, then finished or failed),
        drop the credentials GitLab kept with the project, and add the two push hooks for the
        deploy ``branch`` (None: the source's HEAD, GitLab's default branch after the import).
        On any failure the project is deleted: whole or not at all."""
        path = self.project_path(project)
        secrets = (*source.secrets, url_with_credentials(source))
        spec = project_spec(project, namespace_id=self._namespace_id(), branch="")
        del spec["default_branch"]  # the source's HEAD becomes it
        spec["import_url"] = url_with_credentials(source)
        what = f"create project {path} from {source.url.url}"
        self.check_hook_url()
        try:
            created = self._client.call(lambda: self._api.projects.create(spec), what=what)
        except Conflict:
            raise self._taken(project) from None
        except NakamaError as exc:
            said = scrub(str(exc), secrets)
            if "import" in said.lower() and isinstance(exc, PermanentError):
                raise InvalidInput(f"GitLab refused to import {source.url.url}: {said}") from None
            raise type(exc)(said) from None
        try:
            self._wait_for_import(created, source=source, secrets=secrets)
            self._forget_credentials(created, source=source)
            chosen, chosen_from = self._deploy_branch(created, branch, source=source)
            commit = self.head(project, chosen)
            if commit is None:  # the listing just named it
                raise PermanentError(f"branch {chosen!r} of {path} has no commit")
            for suffix in HOOK_PATHS:
                url = f"{self.hook_base_url}{suffix}/{project}"
                hook = hook_spec(url, token=hook_token, branch=chosen)
                self._client.call(
                    functools.partial(created.hooks.create, hook),
                    what=f"add hook {hook['url']} to {path}",
                )
        except BaseException:
            with contextlib.suppress(NakamaError):
                self.delete_repository(project)
            raise
        return Imported(branch=chosen, commit=commit, branch_from=chosen_from)

    def _wait_for_import(
        self, created: Any, *, source: ImportSource, secrets: tuple[str, ...]
    ) -> None:
        path = f"{self.group}/{created.path}"
        deadline = time.monotonic() + self.import_timeout_s
        status = "scheduled"
        while True:
            state = self._client.call(
                lambda: created.imports.get(), what=f"get the import status of {path}"
            )
            status = str(state.import_status)
            if status == "finished":
                return
            if status == "failed":
                error = scrub(
                    str(state.attributes.get("import_error") or "no reason given"), secrets
                )
                raise InvalidInput(f"GitLab could not import {source.url.url}: {error[:1000]}")
            if time.monotonic() > deadline:
                raise TemporaryError(
                    f"GitLab did not finish importing {source.url.url} within "
                    f"{self.import_timeout_s:g} s (import status: {status}); try again later"
                )
            time.sleep(self.import_poll_s)

    def _forget_credentials(self, created: Any, *, source: ImportSource) -> None:
        """GitLab keeps an import URL's credentials with the project (for a retry); giving it
        the URL without them leaves none."""
        if source.token is None:
            return
        body = {"import_url": source.url.url}
        self._client.call(
            lambda: self._api.projects.update(created.id, body),
            what=f"forget the import credentials of {self.group}/{created.path}",
        )

    def _deploy_branch(
        self, created: Any, branch: str | None, *, source: ImportSource
    ) -> tuple[str, str]:
        path = f"{self.group}/{created.path}"
        branches = self._client.call(
            lambda: created.branches.list(get_all=True), what=f"list the branches of {path}"
        )
        names = sorted(str(b.name) for b in branches)
        if not names:
            raise InvalidInput(f"the source {source.url.url} has no branches (an empty repository)")
        if branch is not None:
            if branch not in names:
                shown = ", ".join(names[:20])
                where = f"the source {source.url.url}"
                raise InvalidInput(f"branch {branch!r} is not in {where}; its branches: {shown}")
            return branch, "chosen"
        fresh = self._client.call(lambda: self._api.projects.get(created.id), what=f"get {path}")
        head = fresh.attributes.get("default_branch")
        if not head or head not in names:
            raise InvalidInput(
                f"the source {source.url.url} names no default branch: choose the branch"
            )
        return str(head), "the source's default branch (its HEAD)"

    def _user_id(self, username: str) -> int:
        users = self._client.call(
            lambda: self._api.users.list(username=username, get_all=True),
            what=f"find user {username}",
        )
        match = [u for u in users if str(u.username).lower() == username.lower()]
        if not match:
            raise InvalidInput(f"no GitLab user named {username!r}")
        return int(match[0].id)

    def check_maintainer(self, username: str) -> None:
        """The user must exist before a project is made for them."""
        self._user_id(username)

    def add_maintainer(self, project: str, username: str) -> None:
        """Make ``username`` a maintainer (never owner) of the project; idempotent."""
        path = self.project_path(project)
        user_id = self._user_id(username)
        handle = self._project(project)
        try:
            self._client.call(
                lambda: handle.members.create({"user_id": user_id, "access_level": MAINTAINER}),
                what=f"add {username} to {path}",
            )
        except PermanentError as exc:
            if not _inherited_higher(exc):
                raise
            # An Owner of the group (or of a parent group) has more than Maintainer already.
            log.info("maintainer has a higher role from the group", project=project, user=username)
        except Conflict:
            member = self._client.call(
                lambda: handle.members.get(user_id), what=f"get member {username} of {path}"
            )
            if int(member.access_level) < MAINTAINER:
                member.access_level = MAINTAINER
                self._client.call(member.save, what=f"make {username} maintainer of {path}")

    def set_member_access(
        self, project: str, gitlab_username: str, access_level: int | None
    ) -> None:
        """Make ``gitlab_username`` a direct member of the project with exactly
        ``access_level`` (raised or lowered), or no direct member for None; idempotent. A user
        GitLab does not know is :class:`InvalidInput`; a missing project :class:`NotFound`.
        Membership inherited from the group is GitLab's and stays as it is."""
        if access_level is not None and access_level not in PROJECT_ACCESS_LEVELS:
            shown = ", ".join(map(str, PROJECT_ACCESS_LEVELS))
            raise InvalidInput(f"access level {access_level} is not a project role ({shown})")
        path = self.project_path(project)
        user_id = self._user_id(gitlab_username)
        handle = self._project(project)
        what = f"{gitlab_username} of {path}"
        try:
            member = self._client.call(
                lambda: handle.members.get(user_id), what=f"get member {what}"
            )
        except NotFound:
            self._require_project(project)  # a missing project is NotFound, not "no member"
            member = None
        if access_level is None:
            if member is not None:
                with contextlib.suppress(NotFound):  # removed meanwhile
                    self._client.call(
                        lambda: handle.members.delete(user_id), what=f"remove member {what}"
                    )
            return
        try:
            if member is None:
                spec = {"user_id": user_id, "access_level": access_level}
                try:
                    self._client.call(
                        lambda: handle.members.create(spec), what=f"add member {what}"
                    )
                    return
                except Conflict:  # added meanwhile: set its level below
                    member = self._client.call(
                        lambda: handle.members.get(user_id), what=f"get member {what}"
                    )
            if int(member.access_level) != access_level:
                member.access_level = access_level
                self._client.call(member.save, what=f"set access level {access_level} for {what}")
        except PermanentError as exc:
            if not _inherited_higher(exc):
                raise
            # GitLab refuses a project role below one inherited from a group: the user keeps
            # the group's (higher) role, which only the group's Owners can change.
            log.warning(
                "member has a higher role from the group", project=project, user=gitlab_username
            )

    def delete_repository(self, project: str) -> None:
        """Delete the project; a missing one (or one already marked for deletion) is fine.

        GitLab may only mark it for deletion (and rename it) and delete it days later, keeping
        its hooks and deploy tokens meanwhile: they are removed first, so that the project neither
        calls the receiver nor lets the app's old deploy token read it in those days."""
        path = self.project_path(project)
        self._strip(project)
        try:
            self._client.call(lambda: self._api.projects.delete(path), what=f"delete {path}")
        except NotFound:
            return
        except PermanentError as exc:
            if "marked for deletion" not in str(exc):
                raise

    def _strip(self, project: str) -> None:
        """Remove the project's hooks and deploy tokens, as far as it goes (best effort)."""
        path = self.project_path(project)
        handle = self._project(project)
        try:
            hooks = self._client.call(
                lambda: handle.hooks.list(get_all=True), what=f"list hooks of {path}"
            )
            tokens = self._client.call(
                lambda: handle.deploytokens.list(get_all=True), what=f"list deploy tokens of {path}"
            )
            for found in [*hooks, *tokens]:
                with contextlib.suppress(NotFound):
                    self._client.call(found.delete, what=f"remove {found.id} of {path}")
        except NakamaError as exc:
            log.info("hooks and deploy tokens not removed before the delete", error=str(exc)[:200])

    # --- reads for the push planner --------------------------------------------------------
    def head(self, project: str, branch: str) -> str | None:
        """The commit at the tip of ``branch``, or None if there is no such branch."""
        handle = self._project(project)
        try:
            found = self._client.call(
                lambda: handle.branches.get(branch), what=f"get branch {branch} of {project}"
            )
        except NotFound:
            self._require_project(project)
            return None
        return str(found.commit["id"])

    def changed_paths(self, project: str, before: str, after: str) -> list[str] | None:
        """Paths that differ between the trees of ``before`` and ``after`` (a rename counts as
        both paths); None when that is unknown: a new branch, a commit GitLab does not have, a
        diff GitLab cut short.

        The compare is ``straight`` (``before..after``, the two trees diffed directly), not
        GitLab's default merge-base compare (``before...after``). For a fast-forward push they
        agree. After a force push the merge-base compare would leave out files changed only in
        the discarded commits, though what is deployed (``before``) has those changes: a
        requirements.txt edited there and gone again would look untouched, and the app would
        keep dependencies its code no longer asks for.
        """
        if before == ZERO_SHA or after == ZERO_SHA:
            return None
        _check_sha(before)
        _check_sha(after)
        handle = self._project(project)
        try:
            result = self._client.call(
                lambda: handle.repository_compare(before, after, straight=True),
                what=f"compare {before[:12]}..{after[:12]} in {project}",
            )
        except NotFound:
            self._require_project(project)
            return None
        if not isinstance(result, dict) or result.get("compare_timeout"):
            return None
        diffs = result.get("diffs") or []
        if len(diffs) >= DIFF_FILES_LIMIT:
            return None
        paths: set[str] = set()
        for diff in diffs:
            paths.update(p for p in (diff.get("old_path"), diff.get("new_path")) if p)
        return sorted(paths)

    def read_files(self, project: str, commit: str, patterns: Iterable[str]) -> dict[str, bytes]:
        """Every regular file at ``commit`` whose path matches one of the fnmatch ``patterns``."""
        wanted = tuple(patterns)
        handle = self._project(project)
        try:
            tree = self._client.call(
                lambda: handle.repository_tree(
                    ref=_check_sha(commit), recursive=True, get_all=True
                ),
                what=f"list files of {commit[:12]} in {project}",
            )
        except NotFound as exc:
            self._require_project(project)
            raise NotFound(f"commit {commit[:12]} not found in project {project!r}") from exc
        paths = [
            str(entry["path"])
            for entry in tree
            if entry.get("type") == "blob"
            and entry.get("mode") in _FILE_MODES
            and is_dependency_file(str(entry["path"]), wanted)
        ]
        result: dict[str, bytes] = {}
        for file_path in paths:
            content = self._client.call(
                functools.partial(handle.files.raw, file_path=file_path, ref=commit),
                what=f"read {file_path} at {commit[:12]} in {project}",
            )
            if not isinstance(content, bytes):
                raise PermanentError(f"GitLab returned no content for {file_path!r}")
            result[file_path] = content
        return result

    def hooks_status(self, project: str) -> list[HookStatus]:
        """The project's hooks and whether GitLab still fires them (it disables failing ones)."""
        handle = self._project(project)
        hooks = self._client.call(
            lambda: handle.hooks.list(get_all=True), what=f"list hooks of {project}"
        )
        return [
            HookStatus(
                id=int(hook.id),
                url=str(hook.url),
                alert_status=str(hook.attributes.get("alert_status") or "executable"),
                disabled_until=_timestamp(hook.attributes.get("disabled_until")),
                push_events=bool(hook.attributes.get("push_events", True)),
                branch_filter=hook.attributes.get("push_events_branch_filter"),
            )
            for hook in hooks
        ]
