"""Cluster mode's registry: app images in one Harbor project, found by their dependency hash.

An image's dependency hash is a label in its config (``DEPENDENCY_HASH_LABEL``, set by ``nakama
build``), so finding "the build for these dependencies" means reading the configs of the app's
timestamp tags, newest first, over the OCI distribution API, the same way the build job decides to
skip. Deleting the app's images is Harbor's REST API: the distribution API can only delete one
manifest at a time and leaves the repository behind.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nakama.clients.harbor import HarborClient
from nakama.clients.oci import OciClient
from nakama.errors import NotFound
from nakama.logs import get_logger
from nakama.ports import BuildRef
from nakama.tagging import DEPENDENCY_HASH_LABEL, tag_timestamp

log = get_logger(__name__)


def newest_first(tags: list[str]) -> list[str]:
    """The timestamp tags (``<branch>-<sha>-<yyyymmddHHMMSS>``) among ``tags``, newest first.

    Others (``latest``, hand-made ones) are left out: Flux's ImagePolicy never deploys them.
    """
    stamped = [(stamp, tag) for tag in set(tags) if (stamp := tag_timestamp(tag)) is not None]
    return [tag for _, tag in sorted(stamped, reverse=True)]


def _created_at(tag: str) -> datetime:
    stamp = tag_timestamp(tag)
    assert stamp is not None  # only timestamp tags are looked at
    return datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


class HarborRegistry:
    """The :class:`nakama.ports.Registry` of cluster mode: repository ``<project>/<app>``."""

    def __init__(self, *, harbor: HarborClient, oci: OciClient, project: str) -> None:
        self._harbor = harbor
        self._oci = oci
        self._project = project

    def repository(self, project: str) -> str:
        """The app's repository path in the registry (without the registry host)."""
        return f"{self._project}/{project}"

    def find(self, project: str, dep_hash: str) -> BuildRef | None:
        """The newest image of ``project`` built from dependencies ``dep_hash``, or None."""
        repository = self.repository(project)
        try:
            tags = self._oci.list_tags(repository)
        except NotFound:  # nothing pushed yet: Harbor creates a repository on the first push
            return None
        tag = self._oci.find_by_label(
            repository, DEPENDENCY_HASH_LABEL, dep_hash, newest_first_tags=newest_first(tags)
        )
        if tag is None:
            return None
        return BuildRef(dep_hash=dep_hash, tag=tag, created_at=_created_at(tag))

    def delete_project(self, project: str, *, dep_hashes: set[str], shared: set[str]) -> None:
        """Delete the app's repository with every image in it (idempotent).

        Images are per app in cluster mode (``<project>/<app>``), so no other app uses them and
        ``dep_hashes`` / ``shared`` change nothing.
        """
        self._harbor.delete_repository(project)
        log.info("registry repository deleted", repository=self.repository(project))
