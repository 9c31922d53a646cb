"""A pipeline's row from start to end, the same in both modes: recorded as pending when it is
submitted, and the one rule both modes (and the reconciler) apply to its project when it ends."""

from __future__ import annotations

from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project
from nakama.ports import PipelineRequest


def record_pending(db: Database, request: PipelineRequest, *, dep_hash: str | None) -> int:
    """Store ``request`` as a pending pipeline; return its id."""
    with db.session() as s:
        row = Pipeline(
            project=request.project,
            kind=request.kind,
            status="pending",
            commit_sha=request.commit,
            branch=request.branch,
            reason=request.reason,
            dep_hash=dep_hash,
        )
        s.add(row)
        s.flush()
        return row.id


def apply_pipeline_end(
    project: Project | None, row: Pipeline, *, status: str, error: str | None, tag: str | None
) -> None:
    """Update ``project`` for ``row`` having ended with ``status``.

    A success deploys the row's commit unless a newer pipeline already deployed; a failure keeps
    what runs and says why (a project that never ran is failed). A project being deleted is
    left alone.
    """
    if project is None or project.status == "deleting":
        return
    if status == "success" and row.id >= project.deployed_seq:
        project.deployed_commit = row.commit_sha
        if tag is not None:
            project.deployed_tag = tag
        project.deployed_seq = row.id
        project.status = "running"
        project.status_message = None
    elif status == "failed":
        if project.deployed_commit is None:
            project.status = "failed"
        project.status_message = f"pipeline {row.id} ({row.kind}) failed: {error}"
