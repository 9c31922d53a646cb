"""Which pending job a local worker takes next: the lanes of :mod:`backend.local.jobs`.

A reload (the commit's environment exists: a code-only push, a rollback or restart onto a
built environment) takes a second; a build may take half an hour. With one queue for both,
two slow builds of one user held up everyone's reloads (finding M3 of the security review).
So there are two lanes:

- **reload workers** take only reloads, so a reload never waits behind another project's build;
- **build workers** take builds, and reloads when no build may start. A build is taken only
  while its owner runs fewer than ``builds_per_user`` builds, and the least busy owner's build
  goes first, so one user's queue cannot fill every build worker.

Whatever the lane, a project runs one job at a time, and only its newest pending job runs: the
older ones are superseded. Deciding is pure; :class:`~backend.local.jobs.LocalPipelines` looks up
environments and owners and applies the choice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Lane = Literal["reload", "build"]


@dataclass(frozen=True)
class Queued:
    """A pending pipeline: its id and project."""

    id: int
    project: str


@dataclass(frozen=True)
class Head:
    """The newest pending pipeline of a project with no job running, classified."""

    id: int
    project: str
    # Project.owner_id; None (a project made by an admin token) is one owner of its own.
    owner: int | None
    # Its environment exists: running it deploys and builds nothing.
    reload: bool


@dataclass(frozen=True)
class Heads:
    heads: list[Queued]  # oldest first
    superseded: dict[int, int]  # pending id -> the newer pending id that replaces it


def queue_heads(pending: Iterable[Queued], *, busy: Collection[str]) -> Heads:
    """The newest pending job of each project that is not ``busy``, and the older ones it
    supersedes. A busy project's jobs wait as they are (the newest then wins when it is free)."""
    newest: dict[str, Queued] = {}
    older: list[Queued] = []
    for job in sorted(pending, key=lambda j: j.id):
        if job.project in busy:
            continue
        if job.project in newest:
            older.append(newest[job.project])
        newest[job.project] = job
    return Heads(
        heads=sorted(newest.values(), key=lambda j: j.id),
        superseded={job.id: newest[job.project].id for job in older},
    )


def choose(
    heads: Sequence[Head],
    *,
    lane: Lane,
    building: Mapping[int | None, int],
    builds_per_user: int,
) -> Head | None:
    """The job a worker of ``lane`` takes, or None. ``building`` counts the builds running per
    owner."""
    reloads = sorted((h for h in heads if h.reload), key=lambda h: h.id)
    if lane == "reload":
        return reloads[0] if reloads else None
    builds = [h for h in heads if not h.reload and building.get(h.owner, 0) < builds_per_user]
    # The least busy owner's build first; in the order submitted among equals.
    first = min(builds, key=lambda h: (building.get(h.owner, 0), h.id), default=None)
    return first or (reloads[0] if reloads else None)
