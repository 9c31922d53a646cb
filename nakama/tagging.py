"""Names for builds: the dependency hash that says whether a build is needed, and the sortable
timestamp tag under which a build is published (``main-<shortsha>-<UTC yyyymmddHHMMSS>``)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

# hashlib and datetime are imported where they are used: the post-receive hook imports this
# module for is_dependency_file on every push, and the two cost it about 5 ms (issue 13).

# The image label holding the dependency hash an image was built from: the image builder sets it,
# the cluster registry adapter and the builder's own skip check look images up by it.
DEPENDENCY_HASH_LABEL = "dev.nakama.dependency-hash"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
TAG_PATTERN = r"^(?P<branch>[A-Za-z0-9_.-]+)-(?P<sha>[0-9a-f]{8})-(?P<ts>[0-9]{14})$"


def is_dependency_file(path: str, patterns: Iterable[str]) -> bool:
    """True if the repository-relative ``path`` matches one of the dependency patterns."""
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def dependency_hash(files: Mapping[str, bytes]) -> str:
    """A stable hash of the dependency files' paths and contents (order does not matter).

    Two commits with the same dependency files share one build.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def image_tag(*, branch: str, sha: str, now: datetime) -> str:
    """A tag that sorts by build time: ``<branch>-<8-char sha>-<UTC yyyymmddHHMMSS>``."""
    from datetime import UTC

    if now.tzinfo is None:
        raise ValueError("image_tag needs an aware datetime")
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    safe_branch = _TAG_UNSAFE.sub("-", branch).strip("-.") or "branch"
    # Docker tags are at most 128 characters; the sha and stamp take 24 of them.
    return f"{safe_branch[:100]}-{sha[:8]}-{stamp}"


def tag_timestamp(tag: str) -> str | None:
    """The ``yyyymmddHHMMSS`` part of a tag made by :func:`image_tag`, or None."""
    m = re.match(TAG_PATTERN, tag)
    return m.group("ts") if m else None
