"""Cluster mode's reconciler: webhooks are hints, GitLab's state is the truth.

One :meth:`Reconciler.step` (run by the composition root's background loop every few seconds)
brings the pipeline rows up to date with GitLab, finishes deletes left half-done, and then, for
each live project:

1. fails pipelines GitLab has said nothing about for too long (and cancels them in GitLab);
2. catches up a push whose hook never arrived: the deploy branch's head is neither deployed nor
   the newest push pipeline's commit, and nothing is running; it is planned exactly as the push
   would have been (:func:`nakama.planning.plan_push`) and submitted as a BUILD or RELOAD. A
   rollback is not a push: the head it replaced stays handled, so it is not deployed again;
3. tells, in the project's ``status_message``, that GitLab has disabled one of its push hooks
   (and clears that once the hooks deliver again).

Each part of each project is guarded on its own: an error is logged once (again only when it
changes) and does not stop the other parts or projects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from backend.cluster.gitlab_forge import GitLabForge, is_receiver_hook
from backend.cluster.pipelines import ACTIVE, GitLabPipelines
from nakama.catch_up import catch_up_push
from nakama.db.outcomes import apply_pipeline_end
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, WebhookEvent, as_utc, utcnow
from nakama.errors import NakamaError
from nakama.logs import get_logger
from nakama.ports import Registry
from nakama.rollback import ROLLBACK_PREFIX
from nakama.settings import PlanningSettings

log = get_logger(__name__)

# Projects the reconciler looks after; "creating" is still being made, "deleting" is going.
LIVE = ("running", "building", "failed")
# A pipeline with no news from GitLab for this long is failed.
STUCK_AFTER = timedelta(hours=2)
# A head must stay unhandled this long before it is caught up, so that a hook still on its way
# (GitLab delivers within seconds) is not raced into a second pipeline for the same commit.
CATCH_UP_AFTER = timedelta(seconds=60)
# A project must have been "deleting" this long before the reconciler finishes its delete, so
# that it does not run alongside the delete the API request started.
DELETE_GRACE = timedelta(minutes=10)
HOOK_MESSAGE = "GitLab disabled the push hook"


def _describe(hours: float) -> str:
    if hours >= 1 and float(hours).is_integer():
        return f"{int(hours)} h"
    return f"{round(hours * 60)} min"


class Reconciler:
    """See the module docstring. ``finish_delete(name)`` finishes one project's delete
    (:meth:`backend.projects.ProjectService.finish_delete`); ``interval_s`` is how often
    :meth:`step` runs, for the messages it writes."""

    def __init__(
        self,
        *,
        db: Database,
        forge: GitLabForge,
        registry: Registry,
        pipelines: GitLabPipelines,
        planning: PlanningSettings,
        interval_s: float,
        finish_delete: Callable[[str], None] | None = None,
        stuck_after: timedelta = STUCK_AFTER,
        catch_up_after: timedelta = CATCH_UP_AFTER,
        delete_grace: timedelta = DELETE_GRACE,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._forge = forge
        self._registry = registry
        self._pipelines = pipelines
        self._planning = planning
        self._interval_s = interval_s
        self._finish_delete = finish_delete
        self._stuck_after = stuck_after
        self._catch_up_after = catch_up_after
        self._delete_grace = delete_grace
        self._now = now
        self._errors: dict[tuple[str, str], str] = {}  # (project, part) → last error logged
        self._seen: dict[str, tuple[str, datetime]] = {}  # project → (unhandled head, since)

    # --- the step --------------------------------------------------------------------------
    def step(self) -> None:
        self._guard("", "refresh pipelines", self._pipelines.refresh_active)
        self._guard("", "finish deletes", self._finish_deletes)
        with self._db.session() as s:
            names = s.scalars(
                select(Project.name).where(Project.status.in_(LIVE)).order_by(Project.name)
            ).all()
        for name in names:
            self._guard(name, "stuck pipelines", functools.partial(self.fail_stuck, name))
            self._guard(name, "missed pushes", functools.partial(self.catch_up, name))
            self._guard(name, "hooks", functools.partial(self.check_hooks, name))
        for gone in set(self._seen) - set(names):
            del self._seen[gone]

    def _guard(self, project: str, part: str, fn: Callable[[], Any]) -> None:
        key = (project, part)
        try:
            fn()
        except NakamaError as exc:
            message = str(exc)[:500]
            if self._errors.get(key) != message:
                log.warning("reconcile failed", project=project or None, part=part, error=message)
            self._errors[key] = message
        except Exception as exc:
            message = type(exc).__name__
            if self._errors.get(key) != message:
                log.exception("reconcile crashed", project=project or None, part=part)
            self._errors[key] = message
        else:
            if self._errors.pop(key, None) is not None:
                log.info("reconcile recovered", project=project or None, part=part)

    def _finish_deletes(self) -> None:
        if self._finish_delete is None:
            return
        cutoff = self._now() - self._delete_grace
        with self._db.session() as s:
            rows = s.execute(
                select(Project.name, Project.updated_at).where(Project.status == "deleting")
            ).all()
        for name, updated_at in rows:
            if updated_at is None or as_utc(updated_at) <= cutoff:
                self._finish_delete(name)

    # --- 1. stuck pipelines ----------------------------------------------------------------
    def fail_stuck(self, project: str) -> None:
        """Fail the project's pipelines with no news for ``stuck_after``; cancel them in GitLab."""
        now = self._now()
        with self._db.session() as s:
            rows = s.scalars(
                select(Pipeline).where(Pipeline.project == project, Pipeline.status.in_(ACTIVE))
            ).all()
        for row in rows:
            times = [as_utc(t) for t in (row.created_at, row.started_at) if t is not None]
            if not times or now - max(times) < self._stuck_after:
                continue
            hours = self._stuck_after.total_seconds() / 3600
            error = f"no status from GitLab for {_describe(hours)}"
            if row.external_id is not None:
                error += f" (GitLab pipeline {row.external_id}); it was canceled"
            if self._fail(row.id, error):
                log.warning("stuck pipeline failed", project=project, pipeline=row.id)
                if row.external_id is not None:
                    self._cancel(row.external_id)

    def _fail(self, pipeline_id: int, error: str) -> bool:
        """Mark the pipeline failed, as :class:`GitLabPipelines` records a failure; False if it
        finished meanwhile."""
        with self._db.session() as s:
            done = s.execute(
                update(Pipeline)
                .where(Pipeline.id == pipeline_id, Pipeline.status.in_(ACTIVE))
                .values(status="failed", error=error, finished_at=self._now())
            )
            if getattr(done, "rowcount", 0) != 1:
                return False
            row = s.get(Pipeline, pipeline_id)
            assert row is not None
            project = s.scalar(select(Project).where(Project.name == row.project))
            apply_pipeline_end(project, row, status="failed", error=error, tag=None)
        return True

    def _cancel(self, external_id: str) -> None:
        """Cancel a pipeline in GitLab, best effort."""
        try:
            self._pipelines.cancel_in_gitlab(external_id)
        except NakamaError as exc:
            log.warning("stuck pipeline not canceled in GitLab", error=str(exc)[:500])

    # --- 2. missed pushes ------------------------------------------------------------------
    def catch_up(self, project: str) -> int | None:
        """Submit the push GitLab's hooks did not deliver, if any; the new pipeline's id."""
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
            if row is None or row.status not in LIVE:
                return None
            branch, deployed = row.branch, row.deployed_commit
            # The newest pipeline of a push (a rollback deploys an older commit on purpose).
            newest = s.scalar(
                select(Pipeline)
                .where(
                    Pipeline.project == project,
                    ~Pipeline.reason.startswith(ROLLBACK_PREFIX, autoescape=True),
                )
                .order_by(Pipeline.id.desc())
                .limit(1)
            )
            active = s.scalar(
                select(Pipeline.id).where(Pipeline.project == project, Pipeline.status.in_(ACTIVE))
            )
            waiting = s.scalar(
                select(WebhookEvent.id).where(
                    WebhookEvent.project == project, WebhookEvent.status == "pending"
                )
            )
        base = deployed or (newest.commit_sha if newest is not None else None)
        if base is None:
            return None  # never provisioned: nothing to compare with
        head = self._forge.head(project, branch)
        if head is None or head in (deployed, newest.commit_sha if newest else None):
            self._seen.pop(project, None)
            return None
        if active is not None or waiting is not None:
            return None  # something is on its way already
        now = self._now()
        seen_head, since = self._seen.get(project, (None, now))
        if seen_head != head:
            self._seen[project] = (head, now)
            since = now
        if now - since < self._catch_up_after:
            return None
        pipeline_id = catch_up_push(
            db=self._db,
            forge=self._forge,
            registry=self._registry,
            pipelines=self._pipelines,
            planning=self._planning,
            project=project,
            branch=branch,
            base=base,
            head=head,
        )
        if pipeline_id is not None:
            self._seen.pop(project, None)
        return pipeline_id

    # --- 3. disabled hooks -----------------------------------------------------------------
    def check_hooks(self, project: str) -> None:
        """Say in the project's status message that GitLab stopped firing its push hooks."""
        hooks = [
            h
            for h in self._forge.hooks_status(project)
            if is_receiver_hook(h.url, project) and not h.delivering
        ]
        message = None
        if hooks:
            hook = hooks[0]
            state = "for good" if hook.alert_status == "disabled" else "for now"
            if hook.disabled_until is not None:
                state = f"until {hook.disabled_until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
            more = f" and {len(hooks) - 1} more" if len(hooks) > 1 else ""
            every = round(self._interval_s + self._catch_up_after.total_seconds())
            message = (
                f"{HOOK_MESSAGE} {urlsplit(hook.url).path}{more} ({hook.alert_status}, {state})"
                f" after failed deliveries; pushes are caught up every {every} s by the reconciler"
            )
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project))
            if row is None or row.status not in LIVE:
                return
            current = row.status_message
            ours = current is not None and current.startswith(HOOK_MESSAGE)
            if message is not None and (current is None or ours) and current != message:
                row.status_message = message
                log.warning("push hook disabled by GitLab", project=project, hook=hooks[0].id)
            elif message is None and ours:
                row.status_message = None
                log.info("push hooks deliver again", project=project)


__all__ = ["CATCH_UP_AFTER", "DELETE_GRACE", "STUCK_AFTER", "Reconciler"]
