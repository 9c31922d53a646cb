"""The project service: create (from the starter kit or by importing an existing repository),
read, roll back and delete projects through the ports.

Every step of a delete is idempotent, and a delete interrupted by a crash is finished at the
next start (``finish_deletes``).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select

from backend.retention import hashes_needed_elsewhere
from backend.sharing import Sharing
from nakama.access import Action, Role
from nakama.auth import Principal
from nakama.db.changes import Fresh
from nakama.db.session import Database
from nakama.db.tables import (
    AppViewer,
    NotificationTarget,
    Pipeline,
    Project,
    ProjectMember,
    ProjectVariable,
    PushPlan,
    User,
    WebhookEvent,
)
from nakama.errors import Conflict, NakamaError, NotFound
from nakama.importing import (
    DEFAULT_USERNAME,
    BuildPolicy,
    ImportSource,
    check_main_file,
    detect,
    files_to_read,
    parse_source_url,
    scrub,
)
from nakama.logs import get_logger
from nakama.models import (
    DetectedFrom,
    LastPush,
    PipelinePublic,
    ProjectCreate,
    ProjectCreated,
    ProjectPublic,
    ProjectSource,
    SourceDetected,
)
from nakama.names import validate_project_name
from nakama.ports import Forge, LogPiece, PipelineRequest, Pipelines, Registry, Runtime
from nakama.quotas import check_new_project
from nakama.rollback import check_target, choose_targets, rollback_reason
from nakama.settings import BuilderSettings, FluxSettings, QuotaSettings
from nakama.tagging import dependency_hash, is_dependency_file

log = get_logger(__name__)
# Cached project lists kept (one per caller and state); the whole cache is dropped past it.
_LISTS_KEPT = 256
_PROJECT_LIST = TypeAdapter(list[ProjectPublic])


@dataclass
class _Listed:
    """One cached project list, and its JSON once somebody asked for it."""

    projects: tuple[ProjectPublic, ...]
    json: bytes | None = None


@dataclass(frozen=True)
class _Stored:
    """What the database holds of one project as one caller sees it."""

    row: Project
    owner: str | None
    role: Role | None
    viewers: dict[str, int]


def read_starter_kit(root: Path) -> dict[str, bytes]:
    """Every file of the starter kit, by repository-relative path."""
    if not root.is_dir():
        raise NakamaError(f"starter kit not found at {root}")
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def pipeline_public(row: Pipeline) -> PipelinePublic:
    duration = None
    if row.started_at and row.finished_at:
        duration = round((row.finished_at - row.started_at).total_seconds(), 3)
    return PipelinePublic(
        id=row.id,
        project=row.project,
        kind=row.kind,
        status=row.status,
        commit=row.commit_sha,
        branch=row.branch,
        reason=row.reason,
        tag=row.tag,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_s=duration,
    )


def import_source(spec: ProjectSource) -> ImportSource:
    """What to import from, checked before anything is made (InvalidInput says why not)."""
    url = parse_source_url(spec.url)
    if spec.main_file is not None:
        check_main_file(spec.main_file)
    token = spec.token.get_secret_value() if spec.token is not None else None
    username = spec.username or url.username or DEFAULT_USERNAME
    return ImportSource(url=url, token=token, username=username)


# When the composition root says nothing: builds of an unknown Python that ignore
# .python-version (then a chosen version cannot be checked and is taken as it is).
UNKNOWN_BUILDS = BuildPolicy(
    default=None, default_from="the builds' default", reads_version_file=False
)
_BASE_PYTHON = re.compile(r"^(?:.*/)?python:(\d+\.\d+)(?:[.-].*)?$")


def local_build_policy(builder: BuilderSettings) -> BuildPolicy:
    """Local builds run every app on one interpreter (``builder.python``, else the server's
    own) and leave ``.python-version`` to cluster builds (image_builder.environments)."""
    version: str | None
    if builder.python is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        where = "the server's Python; NAKAMA_BUILDER__PYTHON is not set"
    else:
        where = f"NAKAMA_BUILDER__PYTHON={builder.python}"
        try:
            out = subprocess.run(
                [builder.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                timeout=30,
                check=True,
            )
            version = out.stdout.decode().strip() or None
        except (OSError, subprocess.SubprocessError):
            version = None
    return BuildPolicy(default=version, default_from=where, reads_version_file=False)


def cluster_build_policy(flux: FluxSettings) -> BuildPolicy:
    """Cluster builds take the version from ``.python-version`` when the base image is an
    official ``python:X.Y`` one (image_builder.dockerfile.select_base_image), else the base's;
    a repository's own Dockerfile makes the image (image_builder.build)."""
    match = _BASE_PYTHON.match(flux.base_image)
    return BuildPolicy(
        default=match.group(1) if match else None,
        default_from=f"the base image {flux.base_image}, NAKAMA_FLUX__BASE_IMAGE",
        reads_version_file=match is not None,
        dockerfile_decides=True,
    )


def recorded_branch(db: Database, project: str) -> str | None:
    """The project's deploy branch (an import's may differ from the settings'); None: no
    such project."""
    with db.session() as s:
        return s.scalar(select(Project.branch).where(Project.name == project))


def recorded_main_file(db: Database, project: str) -> str | None:
    """The script an imported project's app runs when its nakama.toml does not say (None:
    app.py), as its import recorded it."""
    with db.session() as s:
        return s.scalar(select(Project.main_file).where(Project.name == project))


class ProjectService:
    def __init__(
        self,
        *,
        db: Database,
        forge: Forge,
        registry: Registry,
        pipelines: Pipelines,
        runtime: Runtime,
        starter_kit: Mapping[str, bytes],
        deploy_branch: str,
        sharing: Sharing,
        refresh_pipelines: Callable[[str], None] | None = None,
        quotas: QuotaSettings | None = None,
        dependency_files: tuple[str, ...] | None = None,
        builds: BuildPolicy = UNKNOWN_BUILDS,
        drop_database: Callable[[str], None] | None = None,
    ) -> None:
        """``refresh_pipelines(project)``, if given, brings the project's pipeline rows up to
        date before they are read (cluster mode: pipelines run in GitLab, which is asked).
        ``quotas`` bounds the projects one user owns (None: unbounded); ``dependency_files``
        (the planner's patterns) gives the first build its dependency hash when submitted;
        ``builds`` says what the builds do with a repository (its Python, its Dockerfile), for
        an import's detection; ``drop_database(project)`` drops the project's database, if it
        has one, as it is deleted."""
        self._builds = builds
        self._drop_database = drop_database
        self._db = db
        self._forge = forge
        self._registry = registry
        self._pipelines = pipelines
        self._runtime = runtime
        self._starter_kit = starter_kit
        self._branch = deploy_branch
        self._refresh = refresh_pipelines
        # Lists and projects as callers see them (issue 13), fresh by the change counter.
        self._lists: Fresh[_Listed] = Fresh(db.changes, kept=_LISTS_KEPT)
        self._projects: Fresh[_Stored] = Fresh(db.changes, kept=_LISTS_KEPT * 4)
        self._quotas = quotas
        self._dependency_files = dependency_files
        self.sharing = sharing

    # --- reads -----------------------------------------------------------------------------
    def _public(
        self, row: Project, *, owner: str | None, role: Role | None, viewers: dict[str, int]
    ) -> ProjectPublic:
        app_url = None if row.status == "deleting" else self._runtime.app_url(row.name)
        return ProjectPublic(
            name=row.name,
            owner=owner,
            visibility=row.visibility,
            role=role.name if role is not None else None,
            idle_timeout_s=row.idle_timeout_s,
            viewers_7d=viewers.get(row.name, 0),
            status=row.status,
            status_message=row.status_message,
            clone_url=self._forge.clone_url(row.name),
            app_url=app_url,
            app_state=(app := self._runtime.status(row.name)).state,
            app_detail=app.detail or None,
            deployed_commit=row.deployed_commit,
            image_tag=row.deployed_tag,
            last_push=LastPush(action=row.last_action, reason=row.last_reason or "")
            if row.last_action
            else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _row(self, name: str) -> Project:
        with self._db.read() as s:
            row = s.scalar(select(Project).where(Project.name == name))
        if row is None:
            raise NotFound(f"project {name!r} not found")
        return row

    def get(self, name: str, caller: Principal | None = None) -> ProjectPublic:
        """The project as ``caller`` sees it (their role in it; None: no caller's view).

        What the database holds of it is kept while the change counter stays (and for the day:
        the viewers' window); the app's state is asked of the runtime each time (in cluster
        mode nothing says when it changed)."""
        self._refresh_pipelines(name)
        user = caller.user_id if caller is not None else None
        admin = caller.is_admin if caller is not None else None
        key = (name, user, admin, datetime.now(UTC).date())
        stored = self._projects.get(key, lambda: self._stored(name, caller))
        return self._public(
            stored.row, owner=stored.owner, role=stored.role, viewers=stored.viewers
        )

    def _stored(self, name: str, caller: Principal | None) -> _Stored:
        row = self._row(name)
        with self._db.read() as s:
            owner = s.scalar(select(User.username).where(User.id == row.owner_id))
        role = self.sharing.access(name, caller).role if caller is not None else None
        return _Stored(row=row, owner=owner, role=role, viewers=self._viewers([name]))

    def _viewers(self, names: list[str]) -> dict[str, int]:
        """Distinct signed-in viewers in the last 7 days (UTC), per project, in one query."""
        week_ago = datetime.now(UTC).date() - timedelta(days=6)
        with self._db.read() as s:
            rows = s.execute(
                select(AppViewer.project, func.count(func.distinct(AppViewer.user_id)))
                .where(AppViewer.project.in_(names), AppViewer.day >= week_ago)
                .group_by(AppViewer.project)
            ).all()
        return {project: int(count) for project, count in rows}

    def _refresh_pipelines(self, name: str) -> None:
        if self._refresh is None:
            return
        try:
            self._refresh(name)
        except NakamaError as exc:  # a read shows what is stored rather than failing
            log.warning("pipeline status not refreshed", project=name, error=str(exc))

    def list_for(self, caller: Principal) -> list[ProjectPublic]:
        """The projects ``caller`` is a member of (every project for an admin), with their role.

        Cached per caller: the key is the database's change counter (every committed change
        to projects, members, users and viewers, by anyone), the runtime's state version (every
        change of an app's state) and the day (the viewers' 7-day window), so an answer from
        the cache is the answer a new computation would give."""
        return list(self._listed(caller).projects)

    def list_json(self, caller: Principal) -> bytes:
        """:meth:`list_for` as the API answers it (JSON), encoded once per cached list."""
        listed = self._listed(caller)
        if listed.json is None:
            listed.json = _PROJECT_LIST.dump_json(list(listed.projects))
        return listed.json

    def _listed(self, caller: Principal) -> _Listed:
        key = (
            caller.user_id,
            caller.is_admin,
            self._runtime.state_version(),
            datetime.now(UTC).date(),
        )
        return self._lists.get(key, lambda: _Listed(tuple(self._list_for(caller))))

    def _list_for(self, caller: Principal) -> list[ProjectPublic]:
        query = (
            select(Project, User.username)
            .outerjoin(User, User.id == Project.owner_id)
            .order_by(Project.name)
        )
        roles = self.sharing.roles_of(caller.user_id)
        if not caller.is_admin:
            if not roles:
                return []
            query = query.where(Project.name.in_(roles))
        with self._db.read() as s:
            rows = s.execute(query).all()
        viewers = self._viewers([row.name for row, _owner in rows])
        return [
            self._public(
                row,
                owner=owner,
                role=Role.owner if caller.is_admin else roles[row.name],
                viewers=viewers,
            )
            for row, owner in rows
        ]

    def exists(self, name: str) -> bool:
        with self._db.read() as s:
            return s.scalar(select(Project.id).where(Project.name == name)) is not None

    def check(self, name: str, caller: Principal, action: Action = Action.see) -> None:
        """NotFound unless ``caller`` is a member of project ``name`` (another's is as if
        missing); Forbidden if their role does not allow ``action``."""
        self.sharing.check(name, caller, action)

    def set_idle_timeout(self, name: str, seconds: int | None) -> None:
        """Stop the app after ``seconds`` without a request (None: never)."""
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is None:
                raise NotFound(f"project {name!r} not found")
            row.idle_timeout_s = seconds
        log.info("idle timeout set", project=name, seconds=seconds)

    def pipelines(self, name: str, *, limit: int = 50) -> list[PipelinePublic]:
        self._row(name)
        self._refresh_pipelines(name)
        with self._db.read() as s:
            rows = s.scalars(
                select(Pipeline)
                .where(Pipeline.project == name)
                .order_by(Pipeline.id.desc())
                .limit(limit)
            ).all()
        return [pipeline_public(r) for r in rows]

    def pipeline(self, name: str, pipeline_id: int) -> PipelinePublic:
        self._refresh_pipelines(name)
        return pipeline_public(self._pipeline_row(name, pipeline_id))

    def _pipeline_row(self, name: str, pipeline_id: int) -> Pipeline:
        with self._db.read() as s:
            row = s.get(Pipeline, pipeline_id)
        if row is None or row.project != name:
            raise NotFound(f"pipeline {pipeline_id} of project {name!r} not found")
        return row

    def pipeline_log(
        self, name: str, pipeline_id: int, *, offset: int | None = None, max_bytes: int
    ) -> LogPiece:
        """A piece of the log so far (see :meth:`nakama.ports.Pipelines.log`); statuses are not
        refreshed for it (a log stream asks for both)."""
        self._pipeline_row(name, pipeline_id)
        return self._pipelines.log(name, pipeline_id, offset=offset, max_bytes=max_bytes)

    def app_logs(self, name: str, *, tail: int) -> str:
        self._row(name)
        return self._runtime.logs(name, tail=tail)

    # --- create ----------------------------------------------------------------------------
    def create(self, request: ProjectCreate, *, owner_id: int | None = None) -> ProjectCreated:
        """Create the project from the starter kit, or import ``request.source``; either way
        its first build is submitted. A create that fails leaves nothing behind."""
        name = validate_project_name(request.name)
        source = import_source(request.source) if request.source is not None else None
        if request.maintainer is not None:
            self._forge.check_maintainer(request.maintainer)
        try:
            self._runtime.check_can_create()
        except NakamaError as exc:  # nothing made yet: nothing to undo
            raise type(exc)(f"project {name!r} could not be created: {exc}") from exc
        with self._db.session() as s:
            if self._quotas is not None:
                check_new_project(s, self._quotas, owner_id)  # locks the owner's row
            if s.scalar(select(Project.id).where(Project.name == name)) is not None:
                raise Conflict(f"project {name!r} already exists")
            s.add(
                Project(
                    name=name,
                    status="creating",
                    branch=self._branch,
                    hook_token=secrets.token_urlsafe(32),
                    owner_id=owner_id,
                )
            )
        made: list[str] = []  # what this create made outside the database, for the undo
        try:
            if owner_id is not None:
                self.sharing.add_owner(name, owner_id)
            if source is None or request.source is None:
                project = self._provision(name, maintainer=request.maintainer, made=made)
            else:
                project = self._provision_import(
                    name, source=source, spec=request.source, maintainer=request.maintainer,
                    made=made,
                )  # fmt: skip
            return project.model_copy(update={"role": "owner"}) if owner_id is not None else project
        except NakamaError as exc:
            # The adapters scrub the token from what they say; this is the last line of defence.
            why = scrub(str(exc), source.secrets) if source is not None else str(exc)
            self._undo_create(name, made=made, why=why)
            # Same class (so the same HTTP status), with the project named.
            cause = exc if source is None else None  # an import's vendor error stays unsaid
            raise type(exc)(f"project {name!r} could not be created: {why}") from cause
        except Exception:
            self._undo_create(name, made=made, why="internal error")
            raise

    def _undo_create(self, name: str, *, made: list[str], why: str) -> None:
        """Remove what a failed create made, so that its name is free again (review finding
        M4: a failed row held the name). A repository that was there before is not this
        create's and stays. If the undo fails too, the project is left to be deleted at the
        next start, like an interrupted delete."""
        try:
            if made:
                self._delete_everything(name)
            else:  # nothing outside the database yet (the forge's create is whole or nothing)
                self._delete_rows(name)
        except Exception as exc:
            log.error("failed create not undone", project=name, error=str(exc)[:500])
            self._set_status(name, "deleting", f"creation failed: {why}; being removed")
            return
        log.info("failed create undone; the name is free", project=name, error=why[:500])

    def _provision(self, name: str, *, maintainer: str | None, made: list[str]) -> ProjectCreated:
        row = self._row(name)
        commit = self._forge.create_repository(
            name, files=self._starter_kit, branch=row.branch, hook_token=row.hook_token
        )
        made.append("repository")  # made whole or not at all, by both forges
        if maintainer is not None:
            self._forge.add_maintainer(name, maintainer)
        self._runtime.prepare(name, commit=commit)
        reason = "first build of the starter kit"
        self._pipelines.submit(
            PipelineRequest(
                project=name,
                kind="build",
                commit=commit,
                branch=row.branch,
                reason=reason,
                dep_hash=self._starter_kit_hash(),
            )
        )
        with self._db.session() as s:
            project = s.scalar(select(Project).where(Project.name == name))
            assert project is not None
            project.status = "building"
            project.last_action, project.last_reason = "build", reason
        log.info("project created", project=name, commit=commit)
        return ProjectCreated(**self.get(name).model_dump())

    def _provision_import(
        self,
        name: str,
        *,
        source: ImportSource,
        spec: ProjectSource,
        maintainer: str | None,
        made: list[str],
    ) -> ProjectCreated:
        """The repository from ``source``; the main file and Python version detected in its
        head (or checked, if chosen) and recorded; the first build of that head, as a push's."""
        row = self._row(name)
        imported = self._forge.import_repository(
            name, source=source, branch=spec.branch, hook_token=row.hook_token
        )
        made.append("repository")  # made whole or not at all, by both forges
        if maintainer is not None:
            self._forge.add_maintainer(name, maintainer)
        files = self._forge.read_files(name, imported.commit, files_to_read(spec.main_file))
        detection = detect(
            files,
            branch=imported.branch,
            branch_from=imported.branch_from,
            chosen_main=spec.main_file,
            chosen_python=spec.python_version,
            builds=self._builds,
        )
        with self._db.session() as s:
            project = s.scalar(select(Project).where(Project.name == name))
            assert project is not None
            project.branch = imported.branch
            project.source_url = source.url.url
            project.main_file = detection.recorded_main_file
        self._runtime.prepare(name, commit=imported.commit)
        reason = f"first build of the imported {imported.branch} ({imported.commit[:12]})"
        dep_hash = None
        if self._dependency_files is not None:
            dep_hash = dependency_hash(
                self._forge.read_files(name, imported.commit, self._dependency_files)
            )
        self._pipelines.submit(
            PipelineRequest(
                project=name,
                kind="build",
                commit=imported.commit,
                branch=imported.branch,
                reason=reason,
                dep_hash=dep_hash,
            )
        )
        with self._db.session() as s:
            project = s.scalar(select(Project).where(Project.name == name))
            assert project is not None
            project.status = "building"
            project.last_action, project.last_reason = "build", reason
        log.info(
            "project imported",
            project=name,
            source=source.url.url,
            branch=imported.branch,
            commit=imported.commit,
            main_file=detection.main_file,
            python=detection.python_version,
        )
        detected = SourceDetected.model_validate(
            {
                "url": source.url.url,
                "commit": imported.commit,
                "branch": detection.branch,
                "main_file": detection.main_file,
                "python_version": detection.python_version,
                "from": DetectedFrom(
                    branch=detection.branch_from,
                    main_file=detection.main_file_from,
                    python_version=detection.python_from,
                ),
                "notes": list(detection.notes),
                "summary": detection.summary(),
            }
        )
        return ProjectCreated(**self.get(name).model_dump(), detected=detected)

    def _starter_kit_hash(self) -> str | None:
        """The starter kit's dependency hash, as the planner reads it from the first commit:
        a first build carries it from its start, so no delete takes its environment (L6)."""
        if self._dependency_files is None:
            return None
        patterns = self._dependency_files
        return dependency_hash(
            {p: data for p, data in self._starter_kit.items() if is_dependency_file(p, patterns)}
        )

    def _set_status(self, name: str, status: str, message: str | None) -> None:
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is not None:
                row.status, row.status_message = status, message

    # --- rollback --------------------------------------------------------------------------
    def rollback_targets(self, name: str, *, limit: int = 50) -> list[PipelinePublic]:
        """The pipelines one can roll back to: successful, newest first, one per commit, not
        the deployed commit."""
        self._refresh_pipelines(name)
        row = self._row(name)
        with self._db.session() as s:
            rows = s.scalars(
                select(Pipeline)
                .where(Pipeline.project == name, Pipeline.status == "success")
                .order_by(Pipeline.id.desc())
            ).all()
        found = choose_targets(
            (pipeline_public(r) for r in rows), deployed_commit=row.deployed_commit
        )
        return found[:limit]

    def rollback(self, name: str, pipeline_id: int) -> PipelinePublic:
        """Deploy the commit of an earlier successful pipeline again, as a new BUILD pipeline
        (its build is found, so nothing is rebuilt); the new pipeline.

        The next push deploys as usual, planned from the rolled-back commit
        (:func:`nakama.rollback.compare_base`).
        """
        target = self.pipeline(name, pipeline_id)  # refreshed first: what is deployed may move
        project = self._row(name)
        if project.status in ("creating", "deleting"):
            raise Conflict(f"project {name!r} is {project.status}; it cannot be rolled back")
        check_target(target, deployed_commit=project.deployed_commit)
        reason = rollback_reason(target.id, target.commit)
        new_id = self._pipelines.submit(
            PipelineRequest(
                project=name,
                kind="build",
                commit=target.commit,
                branch=project.branch,
                reason=reason,
                # Its environment's hash from the start (L6): the target's, of the same commit.
                dep_hash=self._pipeline_row(name, target.id).dep_hash,
            )
        )
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is not None:
                row.last_action, row.last_reason = "rollback", reason
        log.info(
            "rollback submitted",
            project=name,
            pipeline=new_id,
            target=target.id,
            commit=target.commit[:12],
        )
        return self.pipeline(name, new_id)

    # --- delete ----------------------------------------------------------------------------
    def request_delete(self, name: str) -> None:
        """Mark the project for deletion and remove it in the background (idempotent)."""
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == name))
            if row is None:
                return
            row.status, row.status_message = "deleting", None
        threading.Thread(target=self.finish_delete, args=(name,), daemon=True).start()

    def finish_deletes(self) -> None:
        with self._db.session() as s:
            names = s.scalars(select(Project.name).where(Project.status == "deleting")).all()
        for name in names:
            self.finish_delete(name)

    def finish_delete(self, name: str) -> None:
        try:
            self._delete_everything(name)
        except NakamaError as exc:
            log.error(
                "delete failed; it will be finished at the next start", project=name, error=str(exc)
            )
            self._set_status(name, "deleting", f"delete incomplete: {exc}")

    def _delete_everything(self, name: str) -> None:
        self._pipelines.cancel_project(name)
        self._runtime.remove(name)
        if self._drop_database is not None:
            self._drop_database(name)
        self._forge.delete_repository(name)
        with self._db.session() as s:
            hashes = set(
                s.scalars(
                    select(Pipeline.dep_hash).where(
                        Pipeline.project == name, Pipeline.dep_hash.is_not(None)
                    )
                ).all()
            )
            # Every hash another project's rows carry: what it runs, can roll back to, or a
            # pending or running pipeline will use; if one of those has no hash yet, it may
            # use any environment, and every one is kept (retention removes it later, once
            # unused) rather than removed under a deploy (review finding L6).
            shared = hashes_needed_elsewhere(s, name)
        mine = {h for h in hashes if h}
        self._registry.delete_project(
            name, dep_hashes=mine, shared=mine if shared is None else shared
        )
        self._pipelines.purge_project(name)
        self._delete_rows(name)
        log.info("project deleted", project=name)

    def _delete_rows(self, name: str) -> None:
        with self._db.session() as s:
            tables = (
                Pipeline,
                PushPlan,
                ProjectVariable,
                ProjectMember,
                AppViewer,
                NotificationTarget,
            )
            for table in tables:
                s.execute(delete(table).where(table.project == name))
            s.execute(delete(WebhookEvent).where(WebhookEvent.project == name))
            s.execute(delete(Project).where(Project.name == name))
