"""Which commit a cluster pod syncs when its image and its restart annotation disagree (review D10).

A dependency push is built in CI; Flux's image automation then commits the new tag and the
Deployment rolls. Before, Nakama also restarted the app on the pushed commit when the build
succeeded: two roll-outs per dependency push, the first one running the new code on the old
packages. Now the build's roll-out is the only one, and the pod has to work out by itself that
it should run the built commit rather than the one its restart annotation names.

Two facts reach the init container:

* the image tag ``<branch>-<sha8>-<timestamp>``, written into its environment by the same image
  automation setter that writes the app container's image (``NAKAMA_IMAGE_TAG``);
* the ConfigMap ``<app>-builds`` (mounted as files, :data:`MOUNT`), one key per build Nakama
  submitted: the tag's ``sha8`` -> ``"<full commit> <pipeline id>"``, written *before* the build is
  triggered, so it is there before any image with that tag can exist.

The restart patch puts the pipeline id of the reload (or rollback) in the pod-template annotation
``nakama.dev/pipeline`` next to the commit. Nakama's pipeline ids grow with every decision it
makes, so the newer decision wins (:func:`choose_commit`): the built commit when its build was
submitted after the last restart, else the annotation's commit. A code-only push made while a
build runs therefore keeps its code when the build's image rolls out (it already holds the
dependency change), and a rollback (a restart on the old commit, the old image retagged) keeps
the old commit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from nakama.clients.git import FULL_SHA
from nakama.tagging import TAG_PATTERN

PIPELINE_ANNOTATION = "nakama.dev/pipeline"
MOUNT = "/var/run/nakama-builds"  # where the init container reads the ConfigMap
KEEP = 20  # builds remembered per app: the newest image is always among them
_KEY = re.compile(r"^[0-9a-f]{8}$")


def builds_config_map(project: str) -> str:
    """The ConfigMap that records an app's builds."""
    return f"{project}-builds"


def entry(commit: str, pipeline_id: int) -> tuple[str, str]:
    """The ConfigMap key and value recording one build."""
    if not FULL_SHA.match(commit):
        raise ValueError(f"commit must be a full lower-case hash, got {commit[:80]!r}")
    return commit[:8], f"{commit} {int(pipeline_id)}"


def recorded(data: Mapping[str, str], *, add: tuple[str, str] | None = None) -> dict[str, str]:
    """The ConfigMap's data with ``add`` put in, the :data:`KEEP` newest builds only."""
    rows = {k: v for k, v in data.items() if _parse(v) is not None}
    if add is not None:
        rows[add[0]] = add[1]
    newest = sorted(rows, key=lambda k: _parse(rows[k])[1], reverse=True)  # type: ignore[index]
    return {k: rows[k] for k in sorted(newest[:KEEP])}


def _parse(value: str) -> tuple[str, int] | None:
    commit, _, number = value.strip().partition(" ")
    if not FULL_SHA.match(commit) or not number.isdigit():
        return None
    return commit, int(number)


def read_builds(folder: Path) -> dict[str, str]:
    """The ConfigMap as mounted: one file per key (absent folder: no builds recorded)."""
    try:
        files = list(folder.iterdir())
    except OSError:
        return {}
    out: dict[str, str] = {}
    for path in files:
        if _KEY.match(path.name):  # skips the kubelet's ..data links and ..<timestamp> folders
            try:
                out[path.name] = path.read_text()
            except OSError:
                continue
    return out


def choose_commit(
    *, commit: str, pipeline: str | None, image_tag: str | None, builds: Mapping[str, str]
) -> str:
    """The commit the pod runs: the image's built commit when Nakama submitted its build after
    the restart that named ``commit`` (pipeline id ``pipeline``; none: never restarted), else
    ``commit``. A tag or a record that cannot be read leaves ``commit``."""
    match = re.match(TAG_PATTERN, image_tag or "")
    if match is None:
        return commit
    found = _parse(builds.get(match["sha"], ""))
    if found is None:
        return commit
    built, submitted = found
    restarted = int(pipeline) if pipeline and pipeline.strip().isdigit() else -1
    return built if submitted > restarted else commit
