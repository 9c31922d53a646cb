"""The push planner: a pure decision of what one push needs (BUILD, RELOAD or IGNORE).

Inputs are values fetched by the caller (changed paths from the forge's compare, whether a build
for the commit's dependencies exists); nothing here touches the network, disk or clock. The event
processor acts on the plan; local mode's post-receive hook makes the same plan from the same
inputs to tell the pusher what the push will do (:func:`push_message`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import NamedTuple

from nakama.tagging import is_dependency_file

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


class Action(StrEnum):
    BUILD = "build"
    RELOAD = "reload"
    IGNORE = "ignore"


class Plan(NamedTuple):
    action: Action
    reason: str
    commit: str | None = None
    branch: str | None = None
    # The dependency files whose change makes this a build (empty otherwise).
    dependency_changes: tuple[str, ...] = ()


class RefUpdate(NamedTuple):
    """What a push did to one ref, as a webhook tells it."""

    ref: str
    before: str
    after: str


def branch_of(ref: str) -> str | None:
    return ref[len(BRANCH_PREFIX) :] if ref.startswith(BRANCH_PREFIX) else None


def triage(update: RefUpdate, *, deploy_branch: str) -> Plan | None:
    """Decide IGNORE from the ref update alone; None means the push needs a closer look."""
    if update.ref.startswith(TAG_PREFIX):
        return Plan(Action.IGNORE, f"tag push ({update.ref[len(TAG_PREFIX) :]})")
    branch = branch_of(update.ref)
    if branch is None:
        return Plan(Action.IGNORE, f"not a branch ({update.ref})")
    if branch != deploy_branch:
        return Plan(Action.IGNORE, f"branch {branch!r} is not the deploy branch {deploy_branch!r}")
    if update.after == ZERO_SHA:
        return Plan(Action.IGNORE, f"branch {branch!r} was deleted", branch=branch)
    return None


def plan_push(
    update: RefUpdate,
    *,
    deploy_branch: str,
    dependency_patterns: Iterable[str],
    changed_paths: Sequence[str] | None,
    build_exists: bool,
) -> Plan:
    """Decide what a push to ``update.ref`` needs.

    ``changed_paths`` are the paths that differ between ``before`` and ``after`` (None when they
    cannot be compared, e.g. a new branch); ``build_exists`` says whether a build for the
    dependencies at ``after`` is already there.
    """
    early = triage(update, deploy_branch=deploy_branch)
    if early is not None:
        return early
    branch = deploy_branch
    commit = update.after
    patterns = tuple(dependency_patterns)
    if changed_paths is not None:
        deps = sorted(p for p in changed_paths if is_dependency_file(p, patterns))
        if deps:
            reason = f"dependency files changed: {_listed(deps)}"
            return Plan(Action.BUILD, reason, commit, branch, dependency_changes=tuple(deps))
    if not build_exists:
        return Plan(
            Action.BUILD, "no build exists yet for this commit's dependencies", commit, branch
        )
    if changed_paths is None:
        return Plan(
            Action.RELOAD, "new branch head; its dependencies are already built", commit, branch
        )
    if not changed_paths:
        return Plan(
            Action.RELOAD, "no files changed; redeploying the pushed commit", commit, branch
        )
    n = len(changed_paths)
    return Plan(
        Action.RELOAD, f"only code changed ({n} file{'s' if n != 1 else ''})", commit, branch
    )


def _listed(paths: Sequence[str]) -> str:
    return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def push_message(plan: Plan, *, live: bool = False, build: str = "environment") -> str:
    """One line for the pusher saying what ``plan`` will do and why, e.g. ``requirements.txt
    changed: building a new environment; the current version keeps serving until it is up``.

    ``live``: a reload the running app takes without a restart (Streamlit rerunning its main
    script; :func:`code_reloader.live.live_eligible`); ``build``: what a build makes
    (``environment`` in local mode, ``image`` in cluster mode).
    """
    keeps = "the current version keeps serving until the new one is up"
    if plan.action is Action.BUILD:
        if plan.dependency_changes:
            changed = _listed(plan.dependency_changes)
            return f"{changed} changed: building a new {build}; {keeps}"
        return f"{plan.reason}: building one; {keeps}"
    if plan.action is Action.RELOAD:
        if live:
            return f"{plan.reason}: live reload, the running app reruns it (no restart, no build)"
        return f"{plan.reason}: no build; the app restarts on the new code"
    return f"nothing to deploy: {plan.reason}"
