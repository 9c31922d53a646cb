"""Cluster mode's pipelines: builds run in GitLab CI, reloads through the Kubernetes API.

Each pipeline is a row in the same table as in local mode, so the API and the dashboard read them
the same way. A build (and, with ``reload_via = "gitlab-pipeline"``, a reload) triggers the
pipelines project (``settings.gitlab.pipelines_project``, which includes gitlab-ci-templates/)
through the trigger API with the ``NAKAMA_*`` variables the templates read; GitLab's pipeline id
is kept in ``external_id``, and :meth:`GitLabPipelines.refresh` copies GitLab's status into the
row when the project's pipelines are read. A reload with ``reload_via = "kubernetes"`` (the
default) is one API call, made at once in the calling thread.

A submit that fails because GitLab or the cluster cannot be reached leaves no row behind and
raises :class:`TemporaryError`, so that the event processor tries the push again later; any other
failure is recorded in the row as ``failed``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient
from sqlalchemy import select

from backend.cluster.build_records import record_build
from code_reloader.restart import RestartResult, restart_app
from flux.manifests import image_repository
from nakama.clients.gitlab import GitLabClient
from nakama.db.outcomes import apply_pipeline_end, record_pending
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, utcnow
from nakama.errors import (
    InvalidInput,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.logs import get_logger
from nakama.logslice import PieceCollector, check_read_bytes
from nakama.ports import Forge, LogPiece, PipelineRequest
from nakama.settings import Settings
from nakama.tagging import dependency_hash

log = get_logger(__name__)

ACTIVE = ("pending", "running")
_TRACE_CHUNK = 64 * 1024  # bytes of a job trace read at a time
# GitLab's pipeline statuses as Nakama's (local mode's) pipeline statuses.
GITLAB_STATUS = {
    "created": "pending",
    "waiting_for_resource": "pending",
    "preparing": "pending",
    "pending": "pending",
    "scheduled": "pending",
    "manual": "pending",
    "running": "running",
    "canceling": "running",
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "skipped": "canceled",
}


def build_variables(
    request: PipelineRequest, *, dep_hash: str, repo_url: str, image: str
) -> dict[str, str]:
    """The trigger variables of the image-builder job (image-builder.gitlab-ci.yml)."""
    return {
        "NAKAMA_KIND": "build",
        "NAKAMA_PROJECT": request.project,
        "NAKAMA_REPO": repo_url,
        "NAKAMA_COMMIT": request.commit,
        "NAKAMA_REF": request.branch,
        "NAKAMA_IMAGE": image,
        "NAKAMA_DEP_HASH": dep_hash,
    }


def reload_variables(request: PipelineRequest, *, pipeline_id: int) -> dict[str, str]:
    """The trigger variables of the code-reloader job (code-reloader.gitlab-ci.yml)."""
    return {
        "NAKAMA_KIND": "reload",
        "NAKAMA_PROJECT": request.project,
        "NAKAMA_COMMIT": request.commit,
        "NAKAMA_PIPELINE": str(pipeline_id),
    }


class GitLabPipelines:
    """The :class:`nakama.ports.Pipelines` of cluster mode."""

    def __init__(
        self,
        *,
        db: Database,
        gitlab: GitLabClient,
        forge: Forge,
        kube: ApiClient,
        settings: Settings,
        deploy: Callable[..., str] | None = None,
    ) -> None:
        """``deploy(project, commit=, dep_hash=)`` makes the app run a built commit
        (:meth:`backend.cluster.runtime.KubernetesRuntime.deploy_build`); None: restart its
        Deployment on the commit here."""
        self._deploy = deploy
        self._db = db
        self._gitlab = gitlab
        self._forge = forge
        self._kube = kube
        self._settings = settings
        self._project_path = settings.gitlab.pipelines_project.strip("/")
        self._ref: str | None = None

    # --- the port --------------------------------------------------------------------------
    def submit(self, request: PipelineRequest) -> int:
        if request.kind not in ("build", "reload"):
            raise InvalidInput(f"unknown pipeline kind {request.kind!r}")
        dep_hash = request.dep_hash
        if dep_hash is None and request.kind == "build":
            patterns = self._settings.planning.dependency_files
            files = self._forge.read_files(request.project, request.commit, patterns)
            dep_hash = dependency_hash(files)
        pipeline_id = record_pending(self._db, request, dep_hash=dep_hash)
        try:
            if request.kind == "build":
                assert dep_hash is not None
                image = image_repository(request.project, self._settings.harbor)
                repo_url = self._forge.clone_url(request.project)
                variables = build_variables(
                    request, dep_hash=dep_hash, repo_url=repo_url, image=image
                )
                # Before the trigger, so that the record exists before any image of the build
                # can roll out (nakama.build_record).
                record_build(
                    self._kube,
                    namespace=self._settings.kubernetes.namespace,
                    project=request.project,
                    commit=request.commit,
                    pipeline_id=pipeline_id,
                )
                self._trigger(pipeline_id, variables)
            elif self._settings.kubernetes.reload_via == "gitlab-pipeline":
                self._trigger(pipeline_id, reload_variables(request, pipeline_id=pipeline_id))
            else:
                self._restart(pipeline_id, request)
        except TemporaryError:
            with self._db.session() as s:  # the retried event makes a new one
                gone = s.get(Pipeline, pipeline_id)
                if gone is not None:
                    s.delete(gone)
            raise
        except NakamaError as exc:
            self._finish(pipeline_id, "failed", error=str(exc)[:4000])
            raise
        return pipeline_id

    def cancel_project(self, project: str) -> None:
        """Cancel the project's unfinished pipelines, here and in GitLab."""
        for row in self._rows(project, active=True):
            if row.external_id is not None:
                with contextlib.suppress(NotFound):  # deleted in GitLab meanwhile
                    self.cancel_in_gitlab(row.external_id)
            self._finish(row.id, "canceled", error="the project is being deleted")

    def cancel_in_gitlab(self, external_id: str) -> None:
        """Cancel one pipeline in GitLab (its row is the caller's to record)."""
        handle = self._pipelines_project().pipelines.get(int(external_id), lazy=True)
        self._gitlab.call(handle.cancel, what=f"cancel pipeline {external_id}")

    def purge_project(self, project: str) -> None:
        """Delete the project's pipelines (and so their job logs) in GitLab, as far as allowed:
        deleting a pipeline needs the Owner role on the pipelines project."""
        for row in self._rows(project, active=False):
            if row.external_id is None:
                continue
            handle = self._pipelines_project().pipelines.get(int(row.external_id), lazy=True)
            try:
                self._gitlab.call(handle.delete, what=f"delete pipeline {row.external_id}")
            except NotFound:
                continue
            except Unauthorized as exc:
                log.warning("pipelines kept in GitLab", project=project, error=str(exc))
                return

    def log(
        self, project: str, pipeline_id: int, *, offset: int | None = None, max_bytes: int
    ) -> LogPiece:
        """A piece of the log: the GitLab jobs' traces one after the other, each downloaded in
        chunks of which only the wanted piece is kept (GitLab bounds a trace's size itself)."""
        check_read_bytes(max_bytes, bound=self._settings.logs.pipeline_log_read_bytes)
        with self._db.session() as s:
            row = s.get(Pipeline, pipeline_id)
        if row is None or row.project != project:
            raise NotFound(f"pipeline {pipeline_id} of project {project!r} not found")
        collector = PieceCollector(offset=offset, max_bytes=max_bytes)
        if row.external_id is None:
            collector.feed(self._own_log(row).encode())
            return collector.piece()
        handle = self._pipelines_project()
        pipeline = handle.pipelines.get(int(row.external_id), lazy=True)
        jobs = self._gitlab.call(
            lambda: pipeline.jobs.list(get_all=True),
            what=f"list jobs of pipeline {row.external_id}",
        )
        traces: list[tuple[Any, bytes]] = []
        for job in sorted(jobs, key=lambda j: int(j.id)):
            header = b"" if len(jobs) == 1 else f"== job {job.name} ({job.status})\n".encode()
            traces.append((handle.jobs.get(int(job.id), lazy=True), header))

        # One download of every trace per attempt: a retried call starts the piece again.
        def download() -> None:
            collector.reset()
            for job_handle, header in traces:
                collector.feed(header)
                job_handle.trace(streamed=True, action=collector.feed, chunk_size=_TRACE_CHUNK)

        self._gitlab.call(download, what=f"read the logs of pipeline {row.external_id}")
        return collector.piece()

    # --- status from GitLab ----------------------------------------------------------------
    def refresh(self, project: str) -> None:
        """Copy GitLab's status of the project's unfinished pipelines into their rows."""
        for row in self._rows(project, active=True):
            if row.external_id is None:
                continue
            handle = self._pipelines_project().pipelines.get(int(row.external_id), lazy=True)
            self._gitlab.call(handle.refresh, what=f"get pipeline {row.external_id}")
            status = GITLAB_STATUS.get(str(handle.status), "running")
            if status == row.status:
                continue
            if status in ACTIVE:
                with self._db.session() as s:
                    found = s.get(Pipeline, row.id)
                    if found is not None:
                        found.status = status
                        found.started_at = found.started_at or utcnow()
                continue
            error = None
            if status != "success":
                error = f"GitLab pipeline {row.external_id} {handle.status}"
                if handle.attributes.get("web_url"):
                    error += f": {handle.attributes['web_url']}"
            elif row.kind == "build":
                error = self._roll_out(row)
                status = "failed" if error else status
            self._finish(row.id, status, error=error)

    def refresh_active(self) -> None:
        """Refresh every project that has unfinished pipelines (the reconcile loop's step)."""
        with self._db.session() as s:
            names = s.scalars(
                select(Pipeline.project).where(Pipeline.status.in_(ACTIVE)).distinct()
            ).all()
        for name in names:
            try:
                self.refresh(name)
            except NakamaError as exc:
                log.warning("pipeline status not refreshed", project=name, error=str(exc))

    def _roll_out(self, row: Pipeline) -> str | None:
        """After a build, make the app run the built commit: ``deploy`` (the runtime's
        deploy_build) commits an app's first workload; later images are rolled out by Flux's
        image automation alone, the pods finding the built commit in the build record
        (nakama.build_record). Without ``deploy``, the Deployment is restarted on the commit
        here. Returns an error message, or None.
        """
        try:
            if self._deploy is not None:
                outcome = self._deploy(row.project, commit=row.commit_sha, dep_hash=row.dep_hash)
                log.info("app moved to the built commit", project=row.project, outcome=outcome)
                return None
            self._restart_app(row.project, row.commit_sha, pipeline=row.id)
        except NotFound:
            # Flux has not created the Deployment yet; it will, with the commit the manifests
            # name, and later pushes move it through the annotation.
            log.info("no deployment to move yet", project=row.project)
            return None
        except NakamaError as exc:
            return f"the image was built but the app was not moved to {row.commit_sha[:12]}: {exc}"
        log.info("app moved to the built commit", project=row.project, commit=row.commit_sha[:12])
        return None

    # --- plumbing --------------------------------------------------------------------------
    def _pipelines_project(self) -> Any:
        return self._gitlab.api.projects.get(self._project_path, lazy=True)

    def _trigger_ref(self) -> str:
        """The pipelines project's default branch, where the templates are."""
        if self._ref is None:
            path = self._project_path
            found = self._gitlab.call(
                lambda: self._gitlab.api.projects.get(path), what=f"get project {path}"
            )
            self._ref = str(found.default_branch or "main")
        return self._ref

    def _trigger(self, pipeline_id: int, variables: dict[str, str]) -> None:
        token = self._settings.gitlab.trigger_token
        if token is None:
            raise PermanentError("no pipeline trigger token: set NAKAMA_GITLAB__TRIGGER_TOKEN")
        ref = self._trigger_ref()
        trigger = functools.partial(
            self._pipelines_project().trigger_pipeline,
            ref,
            token.get_secret_value(),
            variables=variables,
        )
        what = f"trigger a {variables['NAKAMA_KIND']} pipeline in {self._project_path}"
        created = self._gitlab.call(trigger, what=what)
        status = GITLAB_STATUS.get(str(created.status), "pending")
        with self._db.session() as s:
            row = s.get(Pipeline, pipeline_id)
            if row is not None:
                row.external_id = str(created.id)
                row.status = status
                if status == "running":
                    row.started_at = utcnow()
        log.info(
            "pipeline triggered",
            project=variables["NAKAMA_PROJECT"],
            pipeline=pipeline_id,
            gitlab_pipeline=created.id,
        )

    def _restart(self, pipeline_id: int, request: PipelineRequest) -> None:
        with self._db.session() as s:
            row = s.get(Pipeline, pipeline_id)
            if row is not None:
                row.status, row.started_at = "running", utcnow()
        result = self._restart_app(request.project, request.commit, pipeline=pipeline_id)
        log.info("app restarted", project=request.project, action=result.action)
        self._finish(pipeline_id, "success")

    def _restart_app(
        self, project: str, commit: str, *, pipeline: int | None = None
    ) -> RestartResult:
        """Restart the app's Deployment on ``commit``, the way the settings say."""
        kube = self._settings.kubernetes
        return restart_app(
            self._kube,
            namespace=kube.namespace,
            name=project,
            commit=commit,
            method=kube.restart_method,
            now=utcnow(),
            pipeline=pipeline,
        )

    def _own_log(self, row: Pipeline) -> str:
        """The log of a pipeline Nakama ran itself (a reload through the Kubernetes API)."""
        where = f"{self._settings.kubernetes.namespace}/{row.project}"
        lines = [
            f"pipeline {row.id}: {row.kind} of {row.commit_sha[:12]} on {row.branch}",
            f"why: {row.reason}",
        ]
        if row.status == "success":
            lines.append(f"restarted deployment {where} on commit {row.commit_sha}")
        elif row.status in ACTIVE:
            lines.append(f"restarting deployment {where}")
        lines.append(f"pipeline {row.status}" + (f": {row.error}" if row.error else ""))
        return "\n".join(lines) + "\n"

    def _rows(self, project: str, *, active: bool) -> list[Pipeline]:
        query = select(Pipeline).where(Pipeline.project == project)
        if active:
            query = query.where(Pipeline.status.in_(ACTIVE))
        with self._db.session() as s:
            return list(s.scalars(query.order_by(Pipeline.id)).all())

    def _finish(self, pipeline_id: int, status: str, *, error: str | None = None) -> None:
        """Record the end of a pipeline and what it means for the project, as local mode does."""
        with self._db.session() as s:
            row = s.get(Pipeline, pipeline_id)
            if row is None:
                return
            row.status, row.error, row.finished_at = status, error, utcnow()
            project = s.scalar(select(Project).where(Project.name == row.project))
            apply_pipeline_end(project, row, status=status, error=error, tag=None)
