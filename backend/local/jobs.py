"""The local pipelines: an in-process job runner for builds and reloads.

Pipelines are rows in the database, so a restart finishes what was stored. Jobs of one project
run one at a time, in the order they were submitted; a job with a newer one queued behind it for
the same project is superseded (the newer one deploys its own commit, building what it needs),
so the app always ends on what was asked for last: the newest push, or a rollback made after it.

Reloads and builds have workers of their own, and builds are shared fairly between users
(:mod:`backend.local.lanes`): a job is a reload when its commit's environment exists when a
worker looks for work, else a build, whatever its ``kind`` says. A reload of a project still
waits for that project's own running build, never for another project's.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import structlog
from sqlalchemy import select, update

from backend.local.build_quota import check_build
from backend.local.forge import LocalForge, size_problem
from backend.local.lanes import Head, Lane, Queued, choose, queue_heads
from backend.local.pipeline_log import open_pipeline_log
from backend.local.runtime import LocalRuntime
from image_builder.environments import (
    BuildSandbox,
    Environment,
    build_environment,
    find_project_environment,
)
from nakama.clients.cgroups import Limiter
from nakama.clients.git import git_stream
from nakama.db.outcomes import apply_pipeline_end, record_pending
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, utcnow
from nakama.errors import NakamaError, PermanentError
from nakama.logs import get_logger
from nakama.logslice import check_read_bytes, read_file_piece
from nakama.ports import LogPiece, PipelineRequest
from nakama.settings import Settings
from nakama.tagging import dependency_hash, image_tag
from nakama.tar_extract import UnsafeArchive, extract_data

log = get_logger(__name__)


class _EnvironmentGone(Exception):
    """A job claimed as a reload found no environment (removed since): it is queued again."""


class LocalPipelines:
    def __init__(
        self,
        *,
        db: Database,
        forge: LocalForge,
        runtime: LocalRuntime,
        settings: Settings,
        limiter: Limiter | None = None,
    ) -> None:
        """Builds run in ``runtime``'s sandbox (each project's second step as the app's uid)
        within the project's limits, when ``limiter`` is given."""
        self._db = db
        self._forge = forge
        self._runtime = runtime
        self._settings = settings
        self.envs_dir = settings.data_dir / "envs"
        sandbox = runtime.sandbox
        self._build_sandbox = BuildSandbox(
            sandbox=sandbox,
            builder_uid=settings.runtime.sandbox_uid_base if sandbox.as_root else None,
            project_uid=lambda project: runtime.uid(project) if sandbox.as_root else None,
            shared_cache=settings.builder.uv_cache_dir,
            limiter=limiter,
            limits=runtime.limits,
        )
        self.logs_dir = settings.data_dir / "logs" / "pipelines"
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # projects with a job running
        self._building: dict[str, int | None] = {}  # projects with a build running: their owner
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # --- the port --------------------------------------------------------------------------
    def submit(self, request: PipelineRequest) -> int:
        # Stored with its dependencies' hash, so that a worker can tell a reload from a build
        # (the push hook sends it; a rollback or first build does not). Unreadable: it is
        # taken as a build, which reads the files again and fails with the reason.
        dep_hash = request.dep_hash or self._dep_hash(request.project, request.commit)
        pipeline_id = record_pending(self._db, request, dep_hash=dep_hash)
        with self._wake:
            self._wake.notify_all()
        return pipeline_id

    def cancel_project(self, project: str) -> None:
        with self._db.session() as s:
            s.execute(
                update(Pipeline)
                .where(Pipeline.project == project, Pipeline.status == "pending")
                .values(status="canceled", finished_at=utcnow())
            )

    def purge_project(self, project: str) -> None:
        """Forget the project's pipeline logs (its rows go with the project's records)."""
        shutil.rmtree(self.logs_dir / project, ignore_errors=True)

    def log(
        self, project: str, pipeline_id: int, *, offset: int | None = None, max_bytes: int
    ) -> LogPiece:
        """A piece of the log read with ``pread`` (see :meth:`nakama.ports.Pipelines.log`)."""
        check_read_bytes(max_bytes, bound=self._settings.logs.pipeline_log_read_bytes)
        return read_file_piece(
            self.log_path(project, pipeline_id), offset=offset, max_bytes=max_bytes
        )

    def log_path(self, project: str, pipeline_id: int) -> Path:
        return self.logs_dir / project / f"{pipeline_id}.log"

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, *, build_workers: int, reload_workers: int) -> None:
        """Requeue jobs a previous run left running, then start the workers: ``build_workers``
        take builds (and reloads when idle), ``reload_workers`` only reloads."""
        if build_workers < 1:
            raise ValueError("at least one build worker is needed, or nothing is ever built")
        with self._db.session() as s:
            s.execute(update(Pipeline).where(Pipeline.status == "running").values(status="pending"))
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        builds: list[Lane] = ["build"] * build_workers
        reloads: list[Lane] = ["reload"] * reload_workers
        for i, lane in enumerate(builds + reloads):
            t = threading.Thread(
                target=self._worker, args=(lane,), name=f"job-{lane}-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        deadline = time.monotonic() + 30  # for all of them: a running build is not waited for
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def restore_deployed(self) -> None:
        """Start every deployed app again (after ``nakama up`` restarts), up to
        ``settings.jobs.restore_workers`` at a time: one after another, 20 apps took 4 s to
        serve (issue 13). The runtime's per-app locks and its quota slot keep concurrent starts
        apart."""
        with self._db.session() as s:
            rows = s.execute(
                select(Project.name, Project.deployed_commit, Project.branch, Pipeline.dep_hash)
                .join(Pipeline, Pipeline.id == Project.deployed_seq)
                .where(Project.deployed_commit.is_not(None), Project.status != "deleting")
            ).all()
        todo = [tuple(row) for row in rows if row[1] is not None]
        if not todo:
            return
        with ThreadPoolExecutor(
            max_workers=min(self._settings.jobs.restore_workers, len(todo)),
            thread_name_prefix="restore",
        ) as pool:
            list(pool.map(lambda row: self._restore_one(*row), todo))

    def _restore_one(self, name: str, commit: str, branch: str, dep_hash: str | None) -> None:
        with self._wake:
            if name in self._busy:
                return  # a job is deploying it right now
            self._busy.add(name)
        try:
            env = find_project_environment(self.envs_dir, dep_hash, name) if dep_hash else None
            if env is None:
                self.submit(
                    PipelineRequest(
                        project=name,
                        kind="build",
                        commit=commit,
                        branch=branch,
                        reason="environment missing at start",
                    )
                )
            else:
                how = self._runtime.restore(name, commit=commit, env=env)
                log.info("app restored", project=name, commit=commit[:12], how=how)
        except NakamaError as exc:
            log.error("app could not be restored", project=name, error=str(exc))
        finally:
            with self._wake:
                self._busy.discard(name)
                self._wake.notify_all()

    def _worker(self, lane: Lane) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                claimed = self._claim(lane)
                if claimed is None:
                    self._wake.wait(timeout=2.0)
                    continue
                job, head = claimed
                self._busy.add(job.project)
                if not head.reload:
                    self._building[job.project] = head.owner
            try:
                self._run(job, reload=head.reload)
            except Exception:
                log.exception("job runner crashed on a pipeline", pipeline=job.id)
            finally:
                with self._wake:
                    self._busy.discard(job.project)
                    self._building.pop(job.project, None)
                    self._wake.notify_all()

    def _claim(self, lane: Lane) -> tuple[Pipeline, Head] | None:
        """The job a worker of ``lane`` takes (:func:`~backend.local.lanes.choose`), marked
        running; older pending jobs of free projects are superseded. Called under the lock."""
        with self._db.session() as s:
            rows = s.execute(
                select(Pipeline, Project.owner_id)
                .outerjoin(Project, Project.name == Pipeline.project)
                .where(Pipeline.status == "pending")
            ).all()
            by_id = {row.id: (row, owner) for row, owner in rows}
            found = queue_heads(
                (Queued(id=row.id, project=row.project) for row, _ in rows), busy=self._busy
            )
            for old, new in found.superseded.items():
                row = by_id[old][0]
                row.status, row.finished_at = "superseded", utcnow()
                row.error = f"a newer pipeline ({new}) replaced it"
            heads = [
                Head(
                    id=q.id,
                    project=q.project,
                    owner=by_id[q.id][1],
                    reload=self._has_environment(by_id[q.id][0]),
                )
                for q in found.heads
            ]
            head = choose(
                heads,
                lane=lane,
                building=Counter(self._building.values()),
                builds_per_user=self._settings.jobs.builds_per_user,
            )
            if head is None:
                return None
            job = by_id[head.id][0]
            job.status, job.started_at = "running", utcnow()
            return job, head

    def _has_environment(self, job: Pipeline) -> bool:
        if job.dep_hash is None:
            return False
        try:
            return find_project_environment(self.envs_dir, job.dep_hash, job.project) is not None
        except NakamaError:  # not a hash: the build reads the files again
            return False

    # --- one job ---------------------------------------------------------------------------
    def _run(self, job: Pipeline, *, reload: bool) -> None:
        structlog.contextvars.bind_contextvars(pipeline=job.id, project=job.project)
        started = time.monotonic()
        path = self.log_path(job.project, job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_pipeline_log(path, max_bytes=self._settings.logs.pipeline_log_max_bytes) as out:
            try:
                env = self._execute(job, out, reload=reload)
            except _EnvironmentGone:
                out.write("its environment went away: it waits for a build worker\n")
                self._requeue(job)
            except NakamaError as exc:
                self._finish(job, "failed", error=str(exc)[:4000], out=out)
            except Exception as exc:
                log.exception("pipeline crashed")
                self._finish(job, "failed", error=f"internal error: {type(exc).__name__}", out=out)
            else:
                self._finish(job, "success", tag=env.tag, notes=env.notes, out=out)
        log.info("pipeline finished", seconds=round(time.monotonic() - started, 3))
        structlog.contextvars.unbind_contextvars("pipeline", "project")

    def _execute(self, job: Pipeline, out: TextIO, *, reload: bool) -> Environment:
        """Deploy ``job``, building its environment first if it has none. A job claimed as a
        ``reload`` never builds (its worker may be a reload worker)."""
        out.write(f"pipeline {job.id}: {job.kind} of {job.commit_sha[:12]} on {job.branch}\n")
        out.write(f"why: {job.reason}\n")
        dep_hash = job.dep_hash or dependency_hash(
            self._forge.read_files(
                job.project, job.commit_sha, self._settings.planning.dependency_files
            )
        )
        job.dep_hash = dep_hash
        env = find_project_environment(self.envs_dir, dep_hash, job.project)
        if env is not None:
            out.write(f"environment {env.tag} for dependencies {dep_hash} exists; no build\n")
            out.writelines(f"note: {note}\n" for note in env.notes)
        elif reload:
            raise _EnvironmentGone
        else:
            tag = image_tag(branch=job.branch, sha=job.commit_sha, now=utcnow())
            out.write(f"building environment {tag} for dependencies {dep_hash}\n")
            check_build(self._db, self._settings, project=job.project)  # the owner's quotas
            with tempfile.TemporaryDirectory(prefix="nakama-src-") as src:
                self._export(job.project, job.commit_sha, Path(src))
                env, _ = build_environment(
                    envs_dir=self.envs_dir,
                    dep_hash=dep_hash,
                    tag=tag,
                    source_dir=Path(src),
                    settings=self._settings.builder,
                    log=out,
                    project=job.project,
                    sandbox=self._build_sandbox,
                )
            out.write(f"built environment {env.tag}\n")
        if not self._still_wanted(job):
            raise NakamaError("the project is being deleted")
        out.write(f"deploying {job.commit_sha[:12]} on {env.tag}\n")
        how = self._runtime.deploy(
            job.project, commit=job.commit_sha, env=env, fallback=self._deployed(job.project)
        )
        out.write(f"app is up: {how}\n")
        return env

    def _export(self, project: str, commit: str, dest: Path) -> None:
        """Extract what the build needs of ``commit`` into ``dest``, streamed from ``git
        archive`` (never held in memory): in the sandbox only the dependency files, which is
        all a sandboxed build sees; each must be within the dependency file bound."""
        planning = self._settings.planning
        files = self._forge.files(project, commit, planning.dependency_files)
        problem = size_problem(files, max_file_bytes=planning.max_dependency_file_bytes)
        if problem is not None:
            raise PermanentError(problem)
        paths = [f":(literal){entry.path}" for entry in files]
        if self._runtime.sandbox.enabled and not paths:
            return
        only = ["--", *paths] if self._runtime.sandbox.enabled else []
        archive = ["archive", "--format=tar", commit, *only]
        try:
            with (
                git_stream(archive, git_dir=self._forge.repo_path(project)) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                extract_data(tar, dest)
        except UnsafeArchive as exc:  # e.g. a link out of the tree
            raise PermanentError(f"the commit's files cannot be used for a build: {exc}") from exc

    def _requeue(self, job: Pipeline) -> None:
        with self._db.session() as s:
            row = s.get(Pipeline, job.id)
            if row is not None and row.status == "running":
                row.status, row.started_at, row.dep_hash = "pending", None, job.dep_hash

    def _dep_hash(self, project: str, commit: str) -> str | None:
        """The hash of ``commit``'s dependency files, or None if they cannot be read."""
        try:
            files = self._forge.read_files(
                project, commit, self._settings.planning.dependency_files
            )
        except NakamaError:
            return None
        return dependency_hash(files)

    def _deployed(self, project: str) -> tuple[str, Environment] | None:
        """The commit and environment the app runs now, to fall back to if a deploy fails."""
        with self._db.session() as s:
            row = s.execute(
                select(Project.deployed_commit, Pipeline.dep_hash)
                .join(Pipeline, Pipeline.id == Project.deployed_seq)
                .where(Project.name == project)
            ).first()
        if row is None or row[0] is None or row[1] is None:
            return None
        env = find_project_environment(self.envs_dir, row[1], project)
        return (row[0], env) if env is not None else None

    def _still_wanted(self, job: Pipeline) -> bool:
        with self._db.session() as s:
            status = s.scalar(select(Project.status).where(Project.name == job.project))
        return status is not None and status != "deleting"

    def _finish(
        self,
        job: Pipeline,
        status: str,
        *,
        out: TextIO,
        tag: str | None = None,
        error: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        out.write(f"pipeline {status}" + (f": {error}" if error else "") + "\n")
        with self._db.session() as s:
            row = s.get(Pipeline, job.id)
            project = s.scalar(select(Project).where(Project.name == job.project))
            if row is None:
                return
            row.status, row.tag, row.error, row.finished_at = status, tag, error, utcnow()
            row.dep_hash = job.dep_hash
            apply_pipeline_end(project, row, status=status, error=error, tag=tag)
            if notes and project is not None and project.deployed_seq == row.id:
                # What the deployed environment does not honour (packages.txt, ...) stays on
                # the project's page and in its API until a deploy without it.
                project.status_message = "note: " + "; ".join(notes)
