"""Retention: what Nakama stores for every push is pruned by age and count (review findings M4
and L2: webhook events, pipeline rows and logs, push plans and environments grew for ever).

A processed event, a push plan or a finished pipeline goes once it is older than its days or
beyond the newest count kept per project (:class:`nakama.settings.RetentionSettings`). Never
pruned: pending events, pending and running pipelines, the deployed pipeline, the rollback
window (the newest successful pipelines of distinct commits, :func:`nakama.rollback.
choose_targets`), and the newest pipeline and newest push pipeline of a project (the event
processor and the reconciler plan from them). In local mode an environment goes once no project
needs it (the deployed one, the rollback window's, a pending or running pipeline's) and it has
been unused for ``environments_days``.

The decisions are pure functions over rows (:func:`pipelines_to_prune`, :func:`needed`); the
:class:`Retention` service reads, decides and deletes, at start-up and every ``interval_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, true
from sqlalchemy.orm import Session

from image_builder.environments import (
    Environment,
    find_environment,
    list_environments,
    private_envs_root,
    remove_environment,
)
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, PushPlan, WebhookEvent, as_utc, utcnow
from nakama.logs import get_logger
from nakama.models import PipelinePublic
from nakama.rollback import choose_targets, is_rollback
from nakama.settings import RetentionSettings

log = get_logger(__name__)

FINISHED_EVENTS = ("done", "ignored", "failed")
FINISHED_PIPELINES = ("success", "failed", "canceled", "superseded")
ACTIVE_PIPELINES = ("pending", "running")
_CHUNK = 500  # ids per DELETE: short transactions, so the API and the receiver are not held


@dataclass(frozen=True)
class PipelineFacts:
    """What the rules need of one pipeline row."""

    id: int
    status: str
    commit: str
    reason: str
    created_at: datetime
    dep_hash: str | None = None


@dataclass
class Pruned:
    """How much one prune removed."""

    events: int = 0
    push_plans: int = 0
    pipelines: int = 0
    logs: int = 0
    environments: int = 0

    def total(self) -> int:
        return self.events + self.push_plans + self.pipelines + self.logs + self.environments


# --- pure decisions ---------------------------------------------------------------------------
def protected(
    newest_first: Sequence[PipelineFacts], *, deployed_seq: int, deployed_commit: str | None,
    window: int,
) -> set[int]:  # fmt: skip
    """The pipelines of one project kept whatever their age: pending and running ones, the
    deployed one, the rollback window, the newest one and the newest push (not a rollback)."""
    keep = {p.id for p in newest_first if p.status in ACTIVE_PIPELINES}
    keep.add(deployed_seq)
    if newest_first:
        keep.add(newest_first[0].id)
    push = next((p for p in newest_first if not is_rollback(p.reason)), None)
    if push is not None:
        keep.add(push.id)
    targets = choose_targets(
        (_public(p) for p in newest_first if p.status == "success"),
        deployed_commit=deployed_commit,
    )
    keep.update(t.id for t in targets[: max(window, 0)])
    return keep


def pipelines_to_prune(
    newest_first: Sequence[PipelineFacts],
    *,
    deployed_seq: int,
    deployed_commit: str | None,
    settings: RetentionSettings,
    now: datetime,
) -> list[int]:
    """The ids of one project's pipelines to delete: finished, not :func:`protected`, and older
    than ``pipelines_days`` or beyond the newest ``pipelines_per_project``."""
    keep = protected(
        newest_first,
        deployed_seq=deployed_seq,
        deployed_commit=deployed_commit,
        window=settings.rollback_window,
    )
    cutoff = now - timedelta(days=settings.pipelines_days)
    doomed = []
    for rank, p in enumerate(newest_first):
        if p.id in keep or p.status not in FINISHED_PIPELINES:
            continue
        if rank >= settings.pipelines_per_project or as_utc(p.created_at) < cutoff:
            doomed.append(p.id)
    return doomed


@dataclass
class Needs:
    """The environments the projects need: per project the dependency hashes it must find,
    and the projects whose pending or running pipeline has no hash yet (their environment cannot
    be told, so every one they might use is kept)."""

    hashes: dict[str, set[str]] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)

    def shared(self) -> set[str]:
        return set().union(*self.hashes.values()) if self.hashes else set()


def needed(
    by_project: Mapping[str, Sequence[PipelineFacts]],
    *,
    deployed: dict[str, tuple[int, str | None]],
    window: int,
) -> Needs:
    """What each project needs of the environments, from its pipelines (newest first) and its
    deployed pipeline and commit: the hashes of its :func:`protected` pipelines."""
    needs = Needs()
    for project, rows in by_project.items():
        seq, commit = deployed.get(project, (0, None))
        keep = protected(rows, deployed_seq=seq, deployed_commit=commit, window=window)
        hashes = needs.hashes.setdefault(project, set())
        for p in rows:
            if p.id not in keep:
                continue
            if p.dep_hash:
                hashes.add(p.dep_hash)
            elif p.status in ACTIVE_PIPELINES:
                needs.unknown.add(project)
    return needs


def _public(p: PipelineFacts) -> PipelinePublic:
    """Only what :func:`choose_targets` reads is filled in."""
    return PipelinePublic.model_construct(
        id=p.id, status=p.status, commit=p.commit, reason=p.reason, created_at=p.created_at
    )


# --- reads ------------------------------------------------------------------------------------
def pipeline_facts(
    s: Session, projects: Iterable[str] | None = None
) -> dict[str, list[PipelineFacts]]:
    """Every pipeline row (of ``projects``, or all), per project, newest first."""
    query = select(
        Pipeline.project,
        Pipeline.id,
        Pipeline.status,
        Pipeline.commit_sha,
        Pipeline.reason,
        Pipeline.created_at,
        Pipeline.dep_hash,
    ).order_by(Pipeline.id.desc())
    if projects is not None:
        query = query.where(Pipeline.project.in_(list(projects)))
    out: dict[str, list[PipelineFacts]] = {}
    for project, pid, status, commit, reason, created, dep_hash in s.execute(query):
        out.setdefault(project, []).append(
            PipelineFacts(pid, status, commit, reason, created, dep_hash)
        )
    return out


def deployed_pipelines(s: Session) -> dict[str, tuple[int, str | None]]:
    """Per project, its deployed pipeline's id (0: none) and commit."""
    rows = s.execute(select(Project.name, Project.deployed_seq, Project.deployed_commit))
    return {name: (int(seq or 0), commit) for name, seq, commit in rows}


def needs_of(s: Session, window: int) -> Needs:
    return needed(pipeline_facts(s), deployed=deployed_pipelines(s), window=window)


def hashes_needed_elsewhere(s: Session, project: str) -> set[str] | None:
    """The dependency hashes projects other than ``project`` may use: those of any of their
    pipeline rows (what they deploy, can roll back to, or are about to build or run on); None
    if one of their pending or running pipelines has no hash yet (it may need any)."""
    facts = pipeline_facts(s)
    facts.pop(project, None)
    needs = needed(facts, deployed=deployed_pipelines(s), window=0)
    if needs.unknown:
        return None
    return {p.dep_hash for rows in facts.values() for p in rows if p.dep_hash}


# --- the service ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFiles:
    """Local mode's files: the environments, and where a pipeline's log is."""

    envs_dir: Path
    log_path: Callable[[str, int], Path]


class Retention:
    """Prunes at start-up and every ``settings.interval_s``; :meth:`prune` once, on demand."""

    def __init__(
        self, db: Database, settings: RetentionSettings, *, files: LocalFiles | None = None
    ) -> None:
        self._db = db
        self._settings = settings
        self._files = files
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            try:
                self.prune()
            except Exception:
                log.exception("prune failed; tried again at the next interval")
            if self._stop.wait(self._settings.interval_s):
                return

    def prune(self, *, now: datetime | None = None) -> Pruned:
        """Delete what the rules let go; how much of each went."""
        now = now or utcnow()
        pruned = Pruned()
        pruned.events = self._prune_events(now)
        pruned.push_plans = self._prune_push_plans(now)
        pruned.environments = self._prune_environments(now) if self._files else 0
        pruned.pipelines, pruned.logs = self._prune_pipelines(now)
        (log.info if pruned.total() else log.debug)("pruned", **vars(pruned))
        return pruned

    # --- rows ------------------------------------------------------------------------------
    def _prune_events(self, now: datetime) -> int:
        cfg = self._settings
        done = WebhookEvent.status.in_(FINISHED_EVENTS)
        return self._prune_table(
            WebhookEvent,
            done,
            WebhookEvent.received_at < now - timedelta(days=cfg.events_days),
            keep=cfg.events_per_project,
        )

    def _prune_push_plans(self, now: datetime) -> int:
        cfg = self._settings
        return self._prune_table(
            PushPlan,
            true(),
            PushPlan.created_at < now - timedelta(days=cfg.push_plans_days),
            keep=cfg.push_plans_per_project,
        )

    def _prune_table(self, table: Any, prunable: Any, old: Any, *, keep: int) -> int:
        """Delete ``prunable`` rows that are ``old``, or beyond the newest ``keep`` of their
        project (the count found in SQL: only projects over it are looked at)."""
        with self._db.session() as s:
            doomed = list(s.scalars(select(table.id).where(prunable, old)).all())
            crowded = s.execute(
                select(table.project)
                .where(prunable)
                .group_by(table.project)
                .having(func.count(table.id) > keep)
            ).scalars()
            for project in list(crowded):
                newest_dropped = s.scalar(
                    select(table.id)
                    .where(prunable, table.project == project)
                    .order_by(table.id.desc())
                    .offset(max(keep, 0))
                    .limit(1)
                )
                if newest_dropped is not None:
                    doomed += s.scalars(
                        select(table.id).where(
                            prunable, table.project == project, table.id <= newest_dropped
                        )
                    ).all()
        return self._delete_ids(table, set(doomed))

    def _delete_ids(self, table: Any, ids: set[int]) -> int:
        ordered = sorted(ids)
        for start in range(0, len(ordered), _CHUNK):
            with self._db.session() as s:
                s.execute(delete(table).where(table.id.in_(ordered[start : start + _CHUNK])))
        return len(ordered)

    def _prune_pipelines(self, now: datetime) -> tuple[int, int]:
        with self._db.session() as s:
            facts = pipeline_facts(s)
            deployed = deployed_pipelines(s)
        doomed: dict[str, list[int]] = {}
        for project, rows in facts.items():
            seq, commit = deployed.get(project, (0, None))
            ids = pipelines_to_prune(
                rows, deployed_seq=seq, deployed_commit=commit, settings=self._settings, now=now
            )
            if ids:
                doomed[project] = ids
        # Only rows still finished: one that ended meanwhile is fine, none starts again.
        count = self._delete_ids(Pipeline, {i for ids in doomed.values() for i in ids})
        logs = 0
        if self._files is not None:
            for project, ids in doomed.items():
                for pipeline_id in ids:
                    logs += _remove_log(self._files.log_path(project, pipeline_id))
        return count, logs

    # --- environments (local mode) ---------------------------------------------------------
    def _prune_environments(self, now: datetime) -> int:
        assert self._files is not None
        envs_dir = self._files.envs_dir
        cutoff = now - timedelta(days=self._settings.environments_days)
        with self._db.session() as s:
            needs = needs_of(s, self._settings.rollback_window)
            projects = set(s.scalars(select(Project.name)).all())
            last_used = dict(
                s.execute(
                    select(Pipeline.dep_hash, func.max(Pipeline.created_at))
                    .where(Pipeline.dep_hash.is_not(None))
                    .group_by(Pipeline.dep_hash)
                ).all()
            )

        def unused_long(env: Environment) -> bool:
            used = max(as_utc(env.created_at), as_utc(last_used.get(env.dep_hash, env.created_at)))
            return used < cutoff

        # (directory the environment is in, its hash, the project it belongs to or None)
        candidates: list[tuple[Path, str, str | None]] = []
        if not needs.unknown:  # a pipeline of unknown hash may want any shared environment
            shared = needs.shared()
            for env in list_environments(envs_dir):
                if env.dep_hash not in shared and unused_long(env):
                    candidates.append((envs_dir, env.dep_hash, None))
        private_root = private_envs_root(envs_dir)
        if private_root.is_dir():
            for directory in sorted(private_root.iterdir()):
                owner = directory.name
                if owner in needs.unknown or not directory.is_dir():
                    continue
                mine = needs.hashes.get(owner, set()) if owner in projects else set()
                for env in list_environments(directory):
                    if env.dep_hash not in mine and unused_long(env):
                        candidates.append((directory, env.dep_hash, owner))
        if not candidates:
            return 0
        # Read again just before removing: a pipeline submitted meanwhile may want one.
        with self._db.session() as s:
            needs = needs_of(s, self._settings.rollback_window)
        removed = 0
        for directory, dep_hash, project in candidates:
            if project is None and (needs.unknown or dep_hash in needs.shared()):
                continue
            if project is not None and (
                project in needs.unknown or dep_hash in needs.hashes.get(project, set())
            ):
                continue
            if find_environment(directory, dep_hash) is None:
                continue
            remove_environment(directory, dep_hash)
            log.info("unused environment removed", dep_hash=dep_hash, project=project)
            removed += 1
        return removed


def _remove_log(path: Path) -> int:
    """Delete a pipeline's log and its rotated parts (``<id>.log.1``, ...); how many files."""
    removed = 0
    for part in [path, *path.parent.glob(f"{path.name}.*")]:
        try:
            part.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
