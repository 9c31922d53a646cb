"""``nakama cluster setup gitlab``: make GitLab ready for cluster mode, idempotently, with
Nakama's own token (``NAKAMA_GITLAB__*``, ``NAKAMA_FLUX__GITOPS_*``, ``NAKAMA_PUBLIC_URL``).

It creates what is missing and the token may create: the GitOps project with the folders Flux
applies, the pipelines project with a ``.gitlab-ci.yml`` including the two templates, a pipeline
trigger token (printed once) owned by the token's user. It sets the pipelines project's
"Minimum role to use pipeline variables" (``ci_pipeline_variables_minimum_override_role``) to
the trigger owner's role where it is higher (GitLab.com makes new projects ``no_one_allowed``,
and the trigger API then refuses every build's variables). Then it checks what it cannot change:
that the token reaches the apps' group, the GitOps and the pipelines project with the roles
Nakama needs (:mod:`backend.cluster.gitlab_access`), that GitLab accepts hooks to Nakama's
receiver (it refuses the local network unless an administrator allows it), and that a token
Flux can push to the GitOps project's protected branch with exists (Maintainer). Each finding is
one line; exit 0 when all is well, 1 when something is left to do, 2 on bad settings.
"""

from __future__ import annotations

import argparse
import base64
import functools
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from backend.cluster.gitlab_access import (
    DEVELOPER,
    GUIDE,
    MAINTAINER,
    OWNER,
    check_access,
    role_name,
    token_user,
)
from backend.cluster.gitlab_forge import GitLabForge
from nakama.clients.gitlab import GitLabClient
from nakama.errors import NakamaError, NotFound, Unauthorized
from nakama.settings import Settings

PROG = "nakama cluster setup gitlab"
TEMPLATES = ("image-builder.gitlab-ci.yml", "code-reloader.gitlab-ci.yml")
# The templates in a checkout of Nakama (the platform image has no checkout: give --ci-templates).
CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "gitlab-ci-templates"
GITOPS_FOLDERS = ("apps", "clusters/nakama/apps")
# ci_pipeline_variables_minimum_override_role: its values, and the role each means.
VARIABLE_ROLES = {"developer": DEVELOPER, "maintainer": MAINTAINER, "owner": OWNER}
NO_ONE = "no_one_allowed"


class Setup:
    """One run: what it did (``done``) and what is left to the operator (``todo``)."""

    def __init__(self, client: GitLabClient, settings: Settings, *, templates: Path | None) -> None:
        self.client = client
        self.api = client.api
        self.settings = settings
        self.templates = templates
        self.out: list[str] = []
        self.todo: list[str] = []

    def say(self, line: str) -> None:
        self.out.append(line)

    def left(self, line: str) -> None:
        self.todo.append(line)

    # --- projects --------------------------------------------------------------------------
    def _project(self, path: str) -> Any | None:
        try:
            return self.client.call(lambda: self.api.projects.get(path), what=f"get {path}")
        except NotFound:
            return None

    def _create(self, path: str, *, branch: str, what: str) -> Any | None:
        """Create the private project ``path`` with a README on ``branch`` (the branch name
        takes effect only for an initialized repository); None when the token may not."""
        namespace, _, name = path.rpartition("/")
        try:
            group = self.client.call(
                lambda: self.api.groups.get(namespace), what=f"get group {namespace}"
            )
            spec = {
                "name": name,
                "path": name,
                "namespace_id": group.id,
                "visibility": "private",
                "initialize_with_readme": True,
                "default_branch": branch,
            }
            created = self.client.call(
                lambda: self.api.projects.create(spec), what=f"create {path}"
            )
        except NakamaError as exc:
            self.left(f"{what} {path} does not exist and could not be created: {exc}")
            return None
        self.say(f"{what} {path}: created (private, default branch {branch})")
        return created

    def _add_files(self, project: Any, branch: str, files: dict[str, bytes], why: str) -> None:
        """Commit those of ``files`` that are missing on ``branch``, in one commit."""
        missing = []
        for name in sorted(files):
            try:
                self.client.call(
                    functools.partial(project.files.raw, file_path=name, ref=branch),
                    what=f"read {name}",
                )
            except NotFound:
                missing.append(name)
        if not missing:
            return
        actions = [
            {
                "action": "create",
                "file_path": name,
                "content": base64.b64encode(files[name]).decode(),
                "encoding": "base64",
            }
            for name in missing
        ]
        body = {"branch": branch, "commit_message": why, "actions": actions}
        try:
            self.client.call(lambda: project.commits.create(body), what="commit")
        except NakamaError as exc:
            self.left(f"{project.path_with_namespace}: could not add {', '.join(missing)}: {exc}")
            return
        self.say(f"{project.path_with_namespace}: added {', '.join(missing)}")

    def gitops(self) -> None:
        flux = self.settings.flux
        path, branch = flux.gitops_project.strip("/"), flux.gitops_branch
        existing = self._project(path)
        project = existing or self._create(path, branch=branch, what="GitOps project")
        if project is None:
            return
        if existing is not None:
            self.say(f"GitOps project {path}: exists (Nakama and Flux use its branch {branch})")
        files = {f"{folder}/.gitkeep": b"" for folder in GITOPS_FOLDERS}
        self._add_files(project, branch, files, "Folders Flux applies (nakama cluster setup)")
        self.say(f"GitOps project {path}: has {', '.join(f + '/' for f in GITOPS_FOLDERS)}")
        self._flux_token(project, branch)

    def _flux_token(self, project: Any, branch: str) -> None:
        """Flux's image automation pushes tags to ``branch``, which GitLab protects: its token
        needs the role that may push there (Maintainer by default), not only write_repository."""
        path = project.path_with_namespace
        try:
            protected = self.client.call(
                lambda: project.protectedbranches.get(branch), what=f"get protection of {branch}"
            )
            levels = [int(a["access_level"]) for a in protected.push_access_levels]
            push = min(levels) if levels else OWNER + 1
        except NotFound:
            push = DEVELOPER  # not protected: Developers push
        except NakamaError as exc:
            self.left(f"{path}: could not read the protection of {branch}: {exc}")
            return
        try:
            tokens = self.client.call(
                lambda: project.access_tokens.list(get_all=True), what="list access tokens"
            )
        except NakamaError:
            tokens = []
        writers = [
            t for t in tokens if t.active and {"write_repository", "api"} & set(t.scopes or [])
        ]
        able = [str(t.name) for t in writers if int(t.access_level or 0) >= push]
        weak = [
            f"{t.name} ({role_name(int(t.access_level or 0))})"
            for t in writers
            if int(t.access_level or 0) < push
        ]
        needed = role_name(push) if push <= OWNER else "no role (nobody may push)"
        if able:
            self.say(f"Flux's token: {', '.join(able)} may push to {path} {branch} ({needed})")
        elif weak:
            self.left(
                f"Flux's token: {', '.join(weak)} cannot push to {path} {branch}, a protected "
                f"branch that needs {needed}: give the token that role ({GUIDE}, Flux)"
            )
        else:
            self.say(
                f"Flux's token: no project access token of {path} can push; the token in the "
                f"Secret gitops-auth needs write_repository and the {needed} role ({GUIDE})"
            )

    def pipelines(self) -> None:
        path = self.settings.gitlab.pipelines_project.strip("/")
        existing = self._project(path)
        project = existing or self._create(path, branch="main", what="pipelines project")
        if project is None:
            return
        if existing is not None:
            self.say(f"pipelines project {path}: exists")
        branch = str(project.attributes.get("default_branch") or "main")
        files = self._ci_files()
        if files is not None:
            self._add_files(project, branch, files, "Nakama's pipelines (nakama cluster setup)")
        try:
            self.client.call(
                lambda: project.files.raw(file_path=".gitlab-ci.yml", ref=branch), what="read"
            )
            self.say(f"pipelines project {path}: has .gitlab-ci.yml")
        except NotFound:
            self.left(
                f"pipelines project {path} has no .gitlab-ci.yml: include both templates "
                "(docs/cluster-install.md, step 2; --ci-templates DIR adds them)"
            )
        owner = self._trigger(project)
        if owner is not None:
            self._variables_role(project, owner)

    def _ci_files(self) -> dict[str, bytes] | None:
        if self.templates is None or not all((self.templates / t).is_file() for t in TEMPLATES):
            return None
        files = {name: (self.templates / name).read_bytes() for name in TEMPLATES}
        include = "".join(f"  - local: {name}\n" for name in TEMPLATES)
        files[".gitlab-ci.yml"] = f"include:\n{include}".encode()
        return files

    def _trigger(self, project: Any) -> int | None:
        """The user id of the trigger token's owner; a new trigger (printed once) if none is
        configured."""
        configured = self.settings.gitlab.trigger_token
        path = project.path_with_namespace
        if configured is None or not configured.get_secret_value():
            try:
                created = self.client.call(
                    lambda: project.triggers.create({"description": "nakama"}),
                    what=f"create a trigger token in {path}",
                )
            except NakamaError as exc:
                self.left(f"no NAKAMA_GITLAB__TRIGGER_TOKEN, and none could be made: {exc}")
                return None
            self.say(f"pipelines project {path}: trigger token created")
            self.say(f"  token: {created.token}")
            self.say("  Store it now, it is not shown again: in NAKAMA_GITLAB__TRIGGER_TOKEN.")
            return int(created.owner["id"])
        token = configured.get_secret_value()
        try:
            triggers = self.client.call(
                lambda: project.triggers.list(get_all=True), what=f"list triggers of {path}"
            )
        except NakamaError as exc:
            self.left(f"the triggers of {path} could not be read: {exc}")
            return None
        found = [t for t in triggers if t.token and token.startswith(str(t.token))]
        if not found:
            self.left(f"NAKAMA_GITLAB__TRIGGER_TOKEN is not a trigger token of {path}")
            return None
        owner = found[0].attributes.get("owner") or {}
        self.say(f"pipelines project {path}: trigger token owned by {owner.get('username')}")
        return int(owner["id"]) if owner.get("id") else None

    def _variables_role(self, project: Any, owner_id: int) -> None:
        """Builds pass trigger variables, which are pipeline variables: the project's minimum
        role for them must be at most the trigger owner's role."""
        path = project.path_with_namespace
        current = project.attributes.get("ci_pipeline_variables_minimum_override_role")
        if current is None:
            return  # a GitLab before 17.1 has no such setting
        try:
            member = self.client.call(
                lambda: project.members_all.get(owner_id), what="get the trigger's owner"
            )
            level = int(member.access_level)
        except NotFound:
            level = 0
        if level < DEVELOPER:
            self.left(
                f"the trigger token's owner is {role_name(level)} of {path}: make them Maintainer"
            )
            return
        needed = VARIABLE_ROLES.get(str(current), OWNER + 1)
        if needed <= level:
            self.say(f"pipelines project {path}: pipeline variables allowed from {current}")
            return
        wanted = max(
            (n for n, v in VARIABLE_ROLES.items() if v <= level), key=lambda n: VARIABLE_ROLES[n]
        )
        project.ci_pipeline_variables_minimum_override_role = wanted
        try:
            self.client.call(project.save, what=f"set the pipeline variables role of {path}")
        except NakamaError as exc:
            self.left(
                f"pipelines project {path}: 'Minimum role to use pipeline variables' is {current}, "
                f"above the trigger owner's role ({role_name(level)}), so GitLab refuses every "
                f"build's variables; set it to {wanted} (Settings > CI/CD > Variables; an Owner "
                f"must where it is owner or no_one_allowed): {exc}"
            )
            return
        self.say(
            f"pipelines project {path}: pipeline variables allowed from {wanted} (was {current})"
        )

    # --- checks ----------------------------------------------------------------------------
    def hooks(self) -> None:
        forge = GitLabForge(self.client, hook_base_url=self.settings.base_url)
        try:
            forge.check_hook_url()
        except NakamaError as exc:
            self.left(str(exc))
            return
        self.say(f"hooks: GitLab accepts hooks to {forge.hook_base_url}")

    def access(self) -> None:
        problems = check_access(self.client, self.settings)
        for problem in problems:
            self.left(problem)
        if not problems:
            self.say(
                "access: the token reaches the apps' group, the GitOps and the pipelines project"
            )


def gitlab_setup_main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    """Ensure the GitOps and pipelines projects, the trigger token and the pipeline-variables
    setting; check the token's reach, hooks to Nakama and Flux's token."""
    stdout = out or sys.stdout
    parser = argparse.ArgumentParser(prog=PROG, description=gitlab_setup_main.__doc__)
    parser.add_argument(
        "--ci-templates",
        type=Path,
        metavar="DIR",
        default=CHECKOUT_TEMPLATES if CHECKOUT_TEMPLATES.is_dir() else None,
        help="the folder with Nakama's CI templates, committed to a pipelines project that has "
        "none (default: the checkout's gitlab-ci-templates/)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = Settings()
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"])
        return _fail(f"invalid settings: {where}: {exc.errors()[0]['msg']}", 2)
    if settings.gitlab.token is None or not settings.gitlab.token.get_secret_value():
        return _fail("NAKAMA_GITLAB__TOKEN is not set", 2)
    client = GitLabClient(settings.gitlab)
    setup = Setup(client, settings, templates=args.ci_templates)
    try:
        user = token_user(client)
        kind = "a group or project access token's bot" if user.bot else "a user's token"
        print(f"GitLab {settings.gitlab.url}, as {user.username} ({kind})", file=stdout)
        for step in (setup.gitops, setup.pipelines, setup.hooks, setup.access):
            step()
    except Unauthorized as exc:
        return _fail(f"GitLab refused the token ({exc}); check NAKAMA_GITLAB__TOKEN", 1)
    except NakamaError as exc:
        return _fail(str(exc), 1)
    finally:
        client.close()
    for line in setup.out:
        print(line, file=stdout)
    for line in setup.todo:
        print(f"to do: {line}", file=stdout)
    if setup.todo:
        print(f"GitLab is not ready: {len(setup.todo)} thing(s) to do.", file=stdout)
        return 1
    print("GitLab is set up.", file=stdout)
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code
