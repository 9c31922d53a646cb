"""Acting on stored events: re-read state, plan the push once, hand work to the pipelines.

Each project's events are processed in the order they were stored, so its newest push is always
planned last. Projects are independent: a few worker threads take one project's pending events
at a time each, so one project's slow forge call (a huge repository, a GitLab that hangs) holds
only that project's events, never the other projects'. Both hooks of one push (``/build-image``
and ``/code-reload``) share one plan; each acts only on its own kind, so a push never causes both
a rebuild and a separate restart. After a rollback, a push is planned from the rolled-back
commit that runs, not from its ``before``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, PushPlan, WebhookEvent, utcnow
from nakama.errors import NakamaError, TemporaryError
from nakama.logs import get_logger
from nakama.models import PushEvent
from nakama.planning import Action, Plan, RefUpdate, plan_push, triage
from nakama.ports import Forge, PipelineRequest, Pipelines, Registry
from nakama.rollback import compare_base
from nakama.settings import PlanningSettings
from nakama.tagging import dependency_hash

log = get_logger(__name__)

ACTS_ON = {"build-image": Action.BUILD, "code-reload": Action.RELOAD}
# Seconds before an event that hit a temporary error is tried again.
RETRY_DELAY_S = 5.0


@dataclass(frozen=True)
class Outcome:
    status: str  # done, ignored, failed
    result: str
    acted: bool = False


class EventProcessor:
    def __init__(
        self,
        *,
        db: Database,
        forge: Forge,
        registry: Registry,
        pipelines: Pipelines,
        settings: PlanningSettings,
    ) -> None:
        self._db = db
        self._forge = forge
        self._registry = registry
        self._pipelines = pipelines
        self._settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy_lock = threading.Lock()
        self._busy: set[str] = set()  # projects a worker holds the events of
        self._retry_at: dict[str, float] = {}  # project -> monotonic time of its next try

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="event-processor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def notify(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        workers = ThreadPoolExecutor(
            max_workers=max(1, self._settings.event_workers), thread_name_prefix="event-worker"
        )
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._dispatch(workers)
                except Exception:
                    log.exception("event processing crashed; retrying")
                self._wake.wait(timeout=self._next_retry_in())
        finally:
            workers.shutdown(wait=True, cancel_futures=True)

    # --- work ------------------------------------------------------------------------------
    def process_pending(self, *, limit: int = 200) -> bool:
        """Process stored events in order, in this thread; True if any event was finished.

        Events are read in batches and their outcomes written together, so a burst of
        deliveries costs a few transactions rather than three per event.
        """
        events, projects = self._pending(limit=limit, skip=())
        return self._process(events, projects) and not self._stop.is_set()

    def _dispatch(self, workers: ThreadPoolExecutor, *, limit: int = 200) -> None:
        """Hand each project's pending events to a worker, unless one holds that project's
        already or it waits to retry a temporary error; the worker wakes the loop when done."""
        now = time.monotonic()
        with self._busy_lock:
            skip = set(self._busy) | {p for p, at in self._retry_at.items() if at > now}
        events, projects = self._pending(limit=limit, skip=skip)
        per_project: dict[str, list[Any]] = {}
        for event in events:
            per_project.setdefault(event.project, []).append(event)
        for project, batch in per_project.items():
            with self._busy_lock:
                self._busy.add(project)
                self._retry_at.pop(project, None)
            workers.submit(self._work_on, project, batch, {project: projects.get(project)})

    def _work_on(
        self, project: str, events: Sequence[Any], projects: dict[str, tuple[str, str] | None]
    ) -> None:
        try:
            finished = self._process(events, {k: v for k, v in projects.items() if v})
            if not finished and not self._stop.is_set():
                with self._busy_lock:
                    self._retry_at[project] = time.monotonic() + RETRY_DELAY_S
        except Exception:
            log.exception("event processing crashed; retrying", project=project)
            with self._busy_lock:
                self._retry_at[project] = time.monotonic() + RETRY_DELAY_S
        finally:
            with self._busy_lock:
                self._busy.discard(project)
            self._wake.set()

    def _next_retry_in(self) -> float:
        """Seconds until a project waiting to retry may be tried again (at most the delay)."""
        now = time.monotonic()
        with self._busy_lock:
            soonest = min(self._retry_at.values(), default=now + RETRY_DELAY_S)
        return min(RETRY_DELAY_S, max(0.05, soonest - now))

    def _pending(
        self, *, limit: int, skip: set[str] | Sequence[str]
    ) -> tuple[Sequence[Any], dict[str, tuple[str, str]]]:
        """The oldest pending events, but for those of projects in ``skip``, and the status and
        branch of their projects."""
        with self._db.session() as s:
            query = select(
                WebhookEvent.id, WebhookEvent.endpoint, WebhookEvent.project, WebhookEvent.body
            ).where(WebhookEvent.status == "pending")
            if skip:
                query = query.where(WebhookEvent.project.not_in(list(skip)))
            events = s.execute(query.order_by(WebhookEvent.id).limit(limit)).all()
            names = {e.project for e in events}
            projects = {
                name: (status, branch)
                for name, status, branch in s.execute(
                    select(Project.name, Project.status, Project.branch).where(
                        Project.name.in_(names)
                    )
                )
            }
        return events, projects

    def _process(self, events: Sequence[Any], projects: dict[str, tuple[str, str]]) -> bool:
        """Process ``events`` in order, stopping at a temporary error (a project's later events
        wait for it to be retried); True if every event was finished."""
        done: list[tuple[int, Outcome]] = []
        for event_id, endpoint, project, body in events:
            if self._stop.is_set():
                break
            structlog.contextvars.bind_contextvars(event_id=event_id, project=project)
            try:
                outcome = self._outcome(endpoint, project, body, projects.get(project))
            except TemporaryError as exc:
                log.warning("event will be retried", error=str(exc))
                self._record(done)
                return False  # keep order: a temporary failure blocks later events
            finally:
                structlog.contextvars.unbind_contextvars("event_id", "project")
            done.append((event_id, outcome))
            # Ignored events are the bulk of a busy hook's traffic: keep them out of info logs.
            level = log.debug if outcome.status in ("ignored", "done") else log.info
            level(
                "event processed", event_id=event_id, status=outcome.status, result=outcome.result
            )
            if outcome.acted:
                self._record(done)  # what was acted on is marked done at once
                done = []
        self._record(done)
        return bool(events)

    def _record(self, outcomes: list[tuple[int, Outcome]]) -> None:
        """Write outcomes: one UPDATE per distinct outcome, not one per event."""
        if not outcomes:
            return
        groups: dict[tuple[str, str], list[int]] = {}
        for event_id, outcome in outcomes:
            groups.setdefault((outcome.status, outcome.result), []).append(event_id)
        now = utcnow()
        with self._db.session() as s:
            for (status, result), ids in groups.items():
                s.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id.in_(ids))
                    .values(status=status, result=result, processed_at=now)
                )

    def _outcome(
        self, endpoint: str, project: str, body: str, info: tuple[str, str] | None
    ) -> Outcome:
        try:
            if info is None or info[0] == "deleting":
                return Outcome("ignored", "project does not exist or is being deleted")
            return self._decide_and_act(
                endpoint, project, PushEvent.model_validate_json(body), branch=info[1]
            )
        except TemporaryError:
            raise
        except NakamaError as exc:
            return Outcome("failed", str(exc)[:2000])
        except Exception:
            log.exception("event failed")
            return Outcome("failed", "internal error while processing the event")

    def _decide_and_act(
        self, endpoint: str, project: str, event: PushEvent, *, branch: str
    ) -> Outcome:
        update_ = RefUpdate(ref=event.ref, before=event.before, after=event.after)
        plan = triage(update_, deploy_branch=branch) or self._shared_plan(project, update_, branch)
        if plan.action is Action.IGNORE:
            return Outcome("ignored", plan.reason)
        if ACTS_ON.get(endpoint) is not plan.action:
            return Outcome("done", f"{plan.action.value} handled by the other hook: {plan.reason}")
        assert plan.commit is not None
        handled = self._already_handled(project, plan.commit)
        if handled:
            return Outcome("done", f"{plan.commit[:12]} {handled}: {plan.reason}")
        dep_hash = self._dep_hash(project, plan.commit)
        pipeline_id = self._pipelines.submit(
            PipelineRequest(
                project=project,
                kind=plan.action.value,
                commit=plan.commit,
                branch=branch,
                reason=plan.reason,
                dep_hash=dep_hash,
            )
        )
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
            if row is not None:
                row.last_action, row.last_reason = plan.action.value, plan.reason
        return Outcome(
            "done", f"{plan.action.value} pipeline {pipeline_id}: {plan.reason}", acted=True
        )

    def _already_handled(self, project: str, commit: str) -> str | None:
        """Why ``commit`` needs no new pipeline (it is deployed, or one is under way), or None.

        A late hook must not deploy a commit twice, e.g. after the reconciler caught it up.
        """
        with self._db.session() as s:
            deployed = s.scalar(select(Project.deployed_commit).where(Project.name == project))
            if deployed == commit:
                return "is already deployed"
            active = s.scalar(
                select(Pipeline.id).where(
                    Pipeline.project == project,
                    Pipeline.commit_sha == commit,
                    Pipeline.status.in_(("pending", "running")),
                )
            )
        return f"is being deployed by pipeline {active}" if active is not None else None

    def _dep_hash(self, project: str, commit: str) -> str:
        files = self._forge.read_files(project, commit, self._settings.dependency_files)
        return dependency_hash(files)

    def _compare_base(self, project: str, before: str) -> str:
        """Where the push's changes are counted from: ``before``, or the commit a rollback put
        back (see :func:`nakama.rollback.compare_base`)."""
        with self._db.session() as s:
            newest = s.execute(
                select(Pipeline.reason, Pipeline.status, Pipeline.commit_sha)
                .where(Pipeline.project == project)
                .order_by(Pipeline.id.desc())
                .limit(1)
            ).first()
        if newest is None:
            return before
        reason, status, commit = newest
        return compare_base(
            before, newest_reason=reason, newest_status=status, newest_commit=commit
        )

    def _shared_plan(self, project: str, update: RefUpdate, branch: str) -> Plan:
        """The plan for this push, made once and shared by both hooks."""
        with self._db.session() as s:
            stored = s.scalar(
                select(PushPlan).where(
                    PushPlan.project == project,
                    PushPlan.before == update.before,
                    PushPlan.after == update.after,
                )
            )
            if stored is not None:
                return Plan(Action(stored.action), stored.reason, update.after, branch)
        base = self._compare_base(project, update.before)
        changed = self._forge.changed_paths(project, base, update.after)
        dep_hash = self._dep_hash(project, update.after)
        plan = plan_push(
            RefUpdate(ref=update.ref, before=base, after=update.after),
            deploy_branch=branch,
            dependency_patterns=self._settings.dependency_files,
            changed_paths=changed,
            build_exists=self._registry.find(project, dep_hash) is not None,
        )
        if base != update.before and plan.action is not Action.IGNORE:
            plan = plan._replace(reason=f"{plan.reason} (since the rollback to {base[:7]})")
        try:
            with self._db.session() as s:
                s.add(
                    PushPlan(
                        project=project,
                        ref=update.ref,
                        before=update.before,
                        after=update.after,
                        action=plan.action.value,
                        reason=plan.reason,
                    )
                )
        except IntegrityError:
            return self._shared_plan(project, update, branch)
        return plan
