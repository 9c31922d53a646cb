"""Rollbacks: putting an earlier successful pipeline's commit back, as pure decisions.

A rollback is an ordinary BUILD pipeline of the old commit (its dependency hash is found in the
registry, so nothing is rebuilt: local mode reuses the environment, ``nakama build`` re-tags the
old image so that Flux's ImagePolicy picks it). What marks it is its reason, which starts with
:data:`ROLLBACK_PREFIX`; two places must tell it from a push:

* the event processor plans the next push from the rolled-back commit (what runs), not from the
  push's ``before`` (the head the rollback replaced): see :func:`compare_base`;
* the reconciler compares the branch head with the newest *push* pipeline, so that the head the
  rollback replaced is not taken for a missed push and deployed again.
"""

from __future__ import annotations

from collections.abc import Iterable

from nakama.errors import Conflict
from nakama.models import PipelinePublic

ROLLBACK_PREFIX = "rollback to pipeline #"


def rollback_reason(pipeline_id: int, commit: str) -> str:
    """The reason of the pipeline that rolls back to ``pipeline_id`` (of ``commit``)."""
    return f"{ROLLBACK_PREFIX}{pipeline_id} (commit {commit[:7]})"


def is_rollback(reason: str | None) -> bool:
    return reason is not None and reason.startswith(ROLLBACK_PREFIX)


def check_target(target: PipelinePublic, *, deployed_commit: str | None) -> None:
    """Raise :class:`Conflict` unless ``target`` is a pipeline one can roll back to."""
    if target.status != "success":
        raise Conflict(
            f"pipeline #{target.id} did not succeed ({target.status}); "
            "only a successful pipeline can be rolled back to"
        )
    if target.commit == deployed_commit:
        raise Conflict(
            f"commit {target.commit[:7]} of pipeline #{target.id} is what is deployed now"
        )


def choose_targets(
    newest_first: Iterable[PipelinePublic], *, deployed_commit: str | None
) -> list[PipelinePublic]:
    """The successful pipelines, newest first, one per commit, without the deployed commit."""
    seen: set[str] = set()
    targets = []
    for pipeline in newest_first:
        if pipeline.status != "success" or pipeline.commit in seen:
            continue
        seen.add(pipeline.commit)
        if pipeline.commit != deployed_commit:
            targets.append(pipeline)
    return targets


def compare_base(
    before: str,
    *,
    newest_reason: str | None,
    newest_status: str | None,
    newest_commit: str | None,
) -> str:
    """The commit a push's changes are counted from, given the project's newest pipeline.

    Normally the push's ``before``. If the newest pipeline is a rollback that did not fail, the
    app runs (or is about to run) the rolled-back commit, so the push must be planned against
    that: a code-only change on top of the replaced head may still need other dependencies
    than the rolled-back version has.
    """
    if is_rollback(newest_reason) and newest_status != "failed" and newest_commit:
        return newest_commit
    return before
