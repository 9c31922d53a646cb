"""Catching up a missed push: plan a project's new head as its hook would have been planned,
and hand the work to the pipelines. Both modes' reconcilers decide *whether* a head was missed;
this is what they do about it, the same way."""

from __future__ import annotations

from sqlalchemy import select

from nakama.db.session import Database
from nakama.db.tables import Project
from nakama.logs import get_logger
from nakama.planning import Action, RefUpdate, plan_push
from nakama.ports import Forge, PipelineRequest, Pipelines, Registry
from nakama.settings import PlanningSettings
from nakama.tagging import dependency_hash

log = get_logger(__name__)

# The start of a caught-up pipeline's reason.
MISSED_PUSH = "reconcile: missed push; "


def catch_up_push(
    *,
    db: Database,
    forge: Forge,
    registry: Registry,
    pipelines: Pipelines,
    planning: PlanningSettings,
    project: str,
    branch: str,
    base: str,
    head: str,
) -> int | None:
    """Plan the push ``base``..``head`` of ``project``'s ``branch`` and submit its pipeline;
    the pipeline's id, or None when the plan is to do nothing."""
    update = RefUpdate(ref=f"refs/heads/{branch}", before=base, after=head)
    patterns = planning.dependency_files
    dep_hash = dependency_hash(forge.read_files(project, head, patterns))
    plan = plan_push(
        update,
        deploy_branch=branch,
        dependency_patterns=patterns,
        changed_paths=forge.changed_paths(project, base, head),
        build_exists=registry.find(project, dep_hash) is not None,
    )
    if plan.action is Action.IGNORE:
        return None
    reason = MISSED_PUSH + plan.reason
    pipeline_id = pipelines.submit(
        PipelineRequest(
            project=project,
            kind=plan.action.value,
            commit=head,
            branch=branch,
            reason=reason,
            dep_hash=dep_hash,
        )
    )
    with db.session() as s:
        found = s.scalar(select(Project).where(Project.name == project))
        if found is not None:
            found.last_action, found.last_reason = plan.action.value, reason
    log.info(
        "missed push caught up",
        project=project,
        commit=head[:12],
        action=plan.action.value,
        pipeline=pipeline_id,
    )
    return pipeline_id
