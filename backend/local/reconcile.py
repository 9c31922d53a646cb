"""Local mode's reconciler: the repositories are the truth, push hooks are hints.

A push whose hook never reached the receiver (Nakama stopped in the middle of it, a delivery
failed, someone pushed into the bare repository on disk) leaves the deploy branch ahead of the
app. :meth:`LocalReconciler.step` runs once at start-up and then every
``receiver.reconcile_interval_s``; for each live project it compares the deploy branch's head
with the deployed commit and with the newest push pipeline's commit. A head that is neither,
with nothing under way for the project (no pending or running pipeline, no stored event waiting),
is planned exactly as its push would have been (:func:`nakama.planning.plan_push`) and
submitted as a BUILD or RELOAD.

It never deploys a commit twice: a head that is deployed, or was the newest push pipeline's
commit (whatever that pipeline's outcome: a failed build is not retried in a loop), is done.
A rollback is not a push: the head it replaced stays handled, so it is not deployed again; a
push made after the rollback is planned from the rolled-back commit that runs. On the timer, a
head must stay unhandled for ``catch_up_after_s`` first, so that a hook on its way is not raced.
Each project is guarded on its own: one project's error is logged (once, until it changes) and
the others are still caught up.

Only the ports are used (:class:`~nakama.ports.Forge`, ``Registry``, ``Pipelines``), so nothing
here is local-mode specific but where it is wired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from nakama.catch_up import catch_up_push
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, WebhookEvent
from nakama.errors import NakamaError
from nakama.logs import get_logger
from nakama.ports import Forge, Pipelines, Registry
from nakama.rollback import ROLLBACK_PREFIX
from nakama.settings import PlanningSettings

log = get_logger(__name__)

# Projects looked after; "creating" is still being made, "deleting" is going.
LIVE = ("running", "building", "failed")
ACTIVE = ("pending", "running")


@dataclass(frozen=True)
class Deployment:
    """What the database says about one project, for the catch-up decision."""

    branch: str
    deployed: str | None
    newest_push: str | None  # the commit of the newest pipeline that is not a rollback
    busy: bool  # a pipeline pending or running, or a stored event not processed yet


def missed_base(state: Deployment, head: str | None) -> str | None:
    """The commit to plan ``head`` from if it is a missed push, else None.

    The base is what runs (the deployed commit, a rolled-back one included), or, before the
    first deploy finished, the newest push pipeline's commit."""
    base = state.deployed or state.newest_push
    if base is None or head is None or state.busy:
        return None
    if head in (state.deployed, state.newest_push):
        return None
    return base


class LocalReconciler:
    """See the module docstring."""

    def __init__(
        self,
        *,
        db: Database,
        forge: Forge,
        registry: Registry,
        pipelines: Pipelines,
        planning: PlanningSettings,
        catch_up_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._forge = forge
        self._registry = registry
        self._pipelines = pipelines
        self._planning = planning
        self._catch_up_after_s = catch_up_after_s
        self._clock = clock
        self._errors: dict[str, str] = {}  # project → the last error logged
        self._seen: dict[str, tuple[str, float]] = {}  # project → (unhandled head, since)

    def step(self, *, wait: bool = True) -> list[int]:
        """Catch up every live project; the new pipelines' ids. ``wait=False`` (at start-up)
        catches up a head at once instead of after ``catch_up_after_s``."""
        with self._db.session() as s:
            names = s.scalars(
                select(Project.name).where(Project.status.in_(LIVE)).order_by(Project.name)
            ).all()
        submitted = []
        for name in names:
            pipeline_id = self._guard(name, wait=wait)
            if pipeline_id is not None:
                submitted.append(pipeline_id)
        for gone in set(self._seen) - set(names):
            del self._seen[gone]
        return submitted

    def _guard(self, project: str, *, wait: bool) -> int | None:
        try:
            pipeline_id = self.catch_up(project, wait=wait)
        except NakamaError as exc:
            self._failed(project, str(exc)[:500], crashed=False)
            return None
        except Exception as exc:
            self._failed(project, type(exc).__name__, crashed=True)
            return None
        if self._errors.pop(project, None) is not None:
            log.info("reconcile recovered", project=project)
        return pipeline_id

    def _failed(self, project: str, message: str, *, crashed: bool) -> None:
        if self._errors.get(project) != message:
            if crashed:
                log.exception("reconcile crashed", project=project)
            else:
                log.warning("reconcile failed", project=project, error=message)
        self._errors[project] = message

    def _state(self, project: str) -> Deployment | None:
        with self._db.session() as s:
            row = s.execute(
                select(Project.branch, Project.deployed_commit, Project.status).where(
                    Project.name == project
                )
            ).first()
            if row is None or row.status not in LIVE:
                return None
            newest = s.scalar(
                select(Pipeline.commit_sha)
                .where(
                    Pipeline.project == project,
                    ~Pipeline.reason.startswith(ROLLBACK_PREFIX, autoescape=True),
                )
                .order_by(Pipeline.id.desc())
                .limit(1)
            )
            active = s.scalar(
                select(Pipeline.id)
                .where(Pipeline.project == project, Pipeline.status.in_(ACTIVE))
                .limit(1)
            )
            waiting = s.scalar(
                select(WebhookEvent.id)
                .where(WebhookEvent.project == project, WebhookEvent.status == "pending")
                .limit(1)
            )
        return Deployment(
            branch=row.branch,
            deployed=row.deployed_commit,
            newest_push=newest,
            busy=active is not None or waiting is not None,
        )

    def catch_up(self, project: str, *, wait: bool = True) -> int | None:
        """Submit the push whose hook did not arrive, if there is one; the pipeline's id."""
        state = self._state(project)
        if state is None:
            return None
        head = self._forge.head(project, state.branch)
        base = missed_base(state, head)
        if base is None or head is None:
            if not state.busy:
                self._seen.pop(project, None)
            return None
        now = self._clock()
        seen_head, since = self._seen.get(project, (None, now))
        if seen_head != head:
            self._seen[project] = (head, now)
            since = now
        if wait and now - since < self._catch_up_after_s:
            return None
        self._seen.pop(project, None)
        return catch_up_push(
            db=self._db,
            forge=self._forge,
            registry=self._registry,
            pipelines=self._pipelines,
            planning=self._planning,
            project=project,
            branch=state.branch,
            base=base,
            head=head,
        )


__all__ = ["LocalReconciler", "missed_base"]
