"""Acting on stored events: re-read state, plan the push once, hand work to the pipelines.

Runs in one background thread, in the order events were stored, so the newest push is always
planned last. Both hooks of one push (``/build-image`` and ``/code-reload``) share one plan; each
acts only on its own kind, so a push never causes both a rebuild and a separate restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nakama.db.session import Database
from nakama.db.tables import Project, PushPlan, WebhookEvent
from nakama.errors import NakamaError, TemporaryError
from nakama.logs import get_logger
from nakama.models import PushEvent
from nakama.planning import Action, Plan, RefUpdate, plan_push, triage
from nakama.ports import Forge, PipelineRequest, Pipelines, Registry
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
        while not self._stop.is_set():
            self._wake.clear()
            try:
                worked = self.process_pending()
            except Exception:
                log.exception("event processing crashed; retrying")
                worked = False
            if not worked:
                self._wake.wait(timeout=RETRY_DELAY_S)

    # --- work ------------------------------------------------------------------------------
    def process_pending(self, *, limit: int = 100) -> bool:
        """Process stored events in order; True if any event was finished."""
        with self._db.session() as s:
            ids = s.scalars(
                select(WebhookEvent.id)
                .where(WebhookEvent.status == "pending")
                .order_by(WebhookEvent.id)
                .limit(limit)
            ).all()
        finished = False
        for event_id in ids:
            if self._stop.is_set():
                break
            if not self._process_one(event_id):
                break  # keep order: a temporary failure blocks later events until retried
            finished = True
        return finished

    def _process_one(self, event_id: int) -> bool:
        with self._db.session() as s:
            event = s.get(WebhookEvent, event_id)
            assert event is not None
            endpoint, body, project = event.endpoint, event.body, event.project
        structlog.contextvars.bind_contextvars(event_id=event_id, project=project)
        try:
            outcome = self._decide_and_act(endpoint, project, PushEvent.model_validate_json(body))
        except TemporaryError as exc:
            log.warning("event will be retried", error=str(exc))
            return False
        except NakamaError as exc:
            outcome = Outcome("failed", str(exc)[:2000])
        except Exception:
            log.exception("event failed")
            outcome = Outcome("failed", "internal error while processing the event")
        finally:
            structlog.contextvars.unbind_contextvars("event_id", "project")
        with self._db.session() as s:
            event = s.get(WebhookEvent, event_id)
            assert event is not None
            event.status = outcome.status
            event.result = outcome.result
            event.processed_at = datetime.now(UTC)
        log.info("event processed", event_id=event_id, status=outcome.status, result=outcome.result)
        return True

    def _decide_and_act(self, endpoint: str, project: str, event: PushEvent) -> Outcome:
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
            if row is None or row.status == "deleting":
                return Outcome("ignored", "project does not exist or is being deleted")
            branch = row.branch
        update = RefUpdate(ref=event.ref, before=event.before, after=event.after)
        plan = triage(update, deploy_branch=branch) or self._shared_plan(project, update, branch)
        if plan.action is Action.IGNORE:
            return Outcome("ignored", plan.reason)
        if ACTS_ON.get(endpoint) is not plan.action:
            return Outcome("done", f"{plan.action.value} handled by the other hook: {plan.reason}")
        assert plan.commit is not None
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
        return Outcome("done", f"{plan.action.value} pipeline {pipeline_id}: {plan.reason}")

    def _dep_hash(self, project: str, commit: str) -> str:
        files = self._forge.read_files(project, commit, self._settings.dependency_files)
        return dependency_hash(files)

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
        changed = self._forge.changed_paths(project, update.before, update.after)
        dep_hash = self._dep_hash(project, update.after)
        plan = plan_push(
            update,
            deploy_branch=branch,
            dependency_patterns=self._settings.dependency_files,
            changed_paths=changed,
            build_exists=self._registry.find(project, dep_hash) is not None,
        )
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
