"""The ports: what the core needs from the outside world, as small Protocols.

Each has a local-mode adapter (backend.local) and a cluster one (backend.cluster: GitLab, Harbor,
Kubernetes + Flux). The composition root (backend.app.build_platform) picks them once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nakama.importing import Imported, ImportSource
from nakama.limits import AppLimits


@dataclass(frozen=True)
class BuildRef:
    """A finished build (an image, or a local environment) for one dependency hash."""

    dep_hash: str
    tag: str
    created_at: datetime


@dataclass(frozen=True)
class PipelineRequest:
    project: str
    kind: str  # "build" or "reload"
    commit: str
    branch: str
    reason: str
    dep_hash: str | None = None


@dataclass(frozen=True)
class LogPiece:
    """Bytes ``start`` to ``start + len(data)`` of a log that had ``size`` bytes when read."""

    data: bytes
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True)
class AppStatus:
    # running, starting, crashed, backoff, stopped; "unknown" when the runtime cannot be asked
    state: str
    detail: str = ""
    # Times the app was restarted after it stopped on its own (local: by the supervisor;
    # cluster: the app container's restartCount in its newest pod).
    restarts: int = 0


class Forge(Protocol):
    """Where the code lives: repositories, their commits and their hooks."""

    def create_repository(
        self, project: str, *, files: Mapping[str, bytes], branch: str, hook_token: str
    ) -> str: ...

    def import_repository(
        self, project: str, *, source: ImportSource, branch: str | None, hook_token: str
    ) -> Imported:
        """Create the repository from an existing one (every branch and tag), with the same
        hooks as :meth:`create_repository`; deploy ``branch`` (None: the source's HEAD branch).
        Whole or not at all. :class:`InvalidInput` for a source that cannot be fetched (its
        message never carries the token)."""
        ...

    def delete_repository(self, project: str) -> None: ...

    def check_maintainer(self, username: str) -> None:
        """Raise :class:`InvalidInput` if ``username`` cannot become a project's maintainer."""
        ...

    def add_maintainer(self, project: str, username: str) -> None: ...

    def set_member_access(
        self, project: str, gitlab_username: str, access_level: int | None
    ) -> None:
        """Give ``gitlab_username`` exactly ``access_level`` on the project's repository (a
        GitLab access level, from :data:`nakama.access.GITLAB_ACCESS_LEVEL`), or no membership
        for None. Idempotent. A forge with users of its own raises :class:`InvalidInput` for one
        it does not know; one without (local mode) has nothing to do."""
        ...

    def clone_url(self, project: str) -> str: ...

    def head(self, project: str, branch: str) -> str | None: ...

    def changed_paths(self, project: str, before: str, after: str) -> list[str] | None: ...

    def read_files(
        self, project: str, commit: str, patterns: Iterable[str]
    ) -> dict[str, bytes]: ...


class Registry(Protocol):
    """Where builds are kept, found by dependency hash."""

    def find(self, project: str, dep_hash: str) -> BuildRef | None: ...

    def delete_project(self, project: str, *, dep_hashes: set[str], shared: set[str]) -> None: ...


class Pipelines(Protocol):
    """Runs builds and reloads."""

    def submit(self, request: PipelineRequest) -> int: ...

    def cancel_project(self, project: str) -> None: ...

    def purge_project(self, project: str) -> None: ...

    def log(
        self, project: str, pipeline_id: int, *, offset: int | None = None, max_bytes: int
    ) -> LogPiece:
        """At most ``max_bytes`` of the pipeline's log: from byte ``offset`` on, or its last
        bytes when ``offset`` is None; never the whole log in memory. Raises
        :class:`InvalidInput` when ``max_bytes`` exceeds the read bound (a setting)."""
        ...


class Runtime(Protocol):
    """Where apps run."""

    def check_can_create(self) -> None:
        """Before a create makes anything: raise, saying what to fix, when no new app could be
        deployed (cluster mode: the token cannot see the GitOps project). Cheap after the first
        success."""
        ...

    def prepare(self, project: str, *, commit: str) -> None:
        """At create time, reserve or declare what the app needs to run (a port; a deployment
        definition that starts on ``commit``, the repository's first). Idempotent."""
        ...

    def app_url(self, project: str) -> str | None:
        """Where the app is served, or None before :meth:`prepare`. Cheap: no network."""
        ...

    def remove(self, project: str) -> None: ...

    def set_environment(self, project: str, variables: Mapping[str, str]) -> None:
        """Make ``variables`` the app's environment variables (besides the runtime's own) and
        apply them by a restart; an app that does not run yet gets them when it starts.
        Idempotent. Never puts a value into a log or an error message."""
        ...

    def status(self, project: str) -> AppStatus: ...

    def state_version(self) -> tuple[int, ...]:
        """Changes whenever a :meth:`status` answer may have, so that a cache of statuses keyed
        on it is fresh (where the runtime cannot know, it changes every few seconds)."""
        ...

    def logs(self, project: str, *, tail: int) -> str: ...

    def set_visibility(self, project: str, visibility: str) -> None:
        """Who may open the app changed: apply it where the runtime guards the app (cluster:
        the Ingress's forward-auth). The local gateway reads it at every request."""
        ...

    def set_limits(self, project: str, limits: AppLimits) -> None:
        """An admin changed the app's limits: apply them (local: the app restarts in its
        sandbox with them; cluster: the manifests are re-rendered and committed). An app that
        does not run yet gets them when it starts. Idempotent."""
        ...

    def data_usage(self, project: str) -> int | None:
        """Bytes the app keeps in ``$DATA_DIR``, or None if it cannot be told (cheap enough
        for a project page: a cached figure)."""
        ...
