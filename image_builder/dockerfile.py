"""What a cluster build makes, decided without I/O: the plan that ties an image to the dependency
files it was built from, and the Dockerfile for an app that brings none.

The plan's tag is the sortable timestamp tag Flux's ImagePolicy picks the newest of; its labels
carry the dependency hash, so that the next push with the same dependencies finds the image in the
registry instead of building it again. App authors never write a Dockerfile: the generated one
installs the dependencies with uv (as local mode does) from the file that
:func:`image_builder.lockfiles.choose_source` picks (a lock file first, made into the pinned
``nakama-requirements.txt`` before the build), installs the Debian packages of ``packages.txt``
(Streamlit Community Cloud's convention; every name checked: :mod:`image_builder.system_packages`)
with ``apt-get``, honours ``.python-version``, and runs the app as a non-root user on one port.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from image_builder.lockfiles import LOCKED_REQUIREMENTS, PYPROJECT, REQUIREMENTS, choose_source
from image_builder.system_packages import DEBIAN_NAME
from nakama.appconfig import expand_port
from nakama.clients.git import FULL_SHA
from nakama.errors import InvalidInput
from nakama.tagging import DEPENDENCY_HASH_LABEL as DEPENDENCY_HASH_LABEL  # its home; re-exported
from nakama.tagging import TAG_PATTERN, dependency_hash, image_tag, is_dependency_file

REVISION_LABEL = "org.opencontainers.image.revision"
CREATED_LABEL = "org.opencontainers.image.created"
DEFAULT_PORT = 8501  # Streamlit's own default, so an app's docs and ours agree
# Numeric, because Kubernetes can only enforce runAsNonRoot for a numeric user; it needs no
# passwd entry, so any base image works. Above 10000 to stay clear of the base's system users.
APP_USER = "10001:10001"

_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
REQUIREMENTS_FILE = re.compile(r"^requirements[A-Za-z0-9._-]*\.txt$")
_PYTHON_VERSION = re.compile(r"^(?:python-?)?(\d+\.\d+)(?:\.\d+)?$")
_PYTHON_BASE = re.compile(
    r"^(?P<repo>(?:.*/)?python):(?P<version>\d+\.\d+)(?:\.\d+)?(?P<rest>-.*)?$"
)
_TAG_RE = re.compile(TAG_PATTERN)


@dataclass(frozen=True)
class BuildPlan:
    """One build: the tag to push, the labels to set, and the dependency files behind them."""

    dep_hash: str
    tag: str
    labels: dict[str, str]
    dependency_files: tuple[str, ...]

    @property
    def branch_part(self) -> str:
        """The tag's branch part: the tags of one ImagePolicy share it."""
        match = _TAG_RE.match(self.tag)
        assert match is not None  # image_tag always makes a matching tag
        return match.group("branch")


def plan_build(
    *,
    files: Mapping[str, bytes],
    branch: str,
    sha: str,
    now: datetime,
    dependency_patterns: Iterable[str],
) -> BuildPlan:
    """The plan for building ``sha`` of ``branch``; ``files`` may hold more than dependencies."""
    if not FULL_SHA.match(sha):
        raise InvalidInput(f"commit must be a full lower-case hash, got {sha!r}")
    patterns = tuple(dependency_patterns)
    deps = {path: content for path, content in files.items() if is_dependency_file(path, patterns)}
    dep_hash = dependency_hash(deps)
    labels = {
        DEPENDENCY_HASH_LABEL: dep_hash,
        REVISION_LABEL: sha,
        CREATED_LABEL: now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tag = image_tag(branch=branch, sha=sha, now=now)
    return BuildPlan(
        dep_hash=dep_hash, tag=tag, labels=labels, dependency_files=tuple(sorted(deps))
    )


def newest_first(tags: Iterable[str], *, branch_part: str) -> list[str]:
    """The timestamp tags of one branch, newest first: the order Flux's ImagePolicy ranks them.

    Other tags (``latest``, another branch's, hand-made ones) are left out: Flux never deploys
    them, so an image found under one of them would not run.
    """
    ranked = []
    for tag in set(tags):
        match = _TAG_RE.match(tag)
        if match is not None and match.group("branch") == branch_part:
            ranked.append((match.group("ts"), tag))
    return [tag for _, tag in sorted(ranked, reverse=True)]


def tag_time(now: datetime, newest_tag: str | None) -> datetime:
    """``now``, or one second after ``newest_tag``'s stamp if the clock is not past it (a runner
    with a slow clock, two builds in one second): Flux deploys the highest stamp, so a new tag
    must rank first."""
    match = _TAG_RE.match(newest_tag or "")
    if match is None:
        return now
    newest = datetime.strptime(match.group("ts"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return max(now, newest + timedelta(seconds=1))


def select_base_image(base_image: str, python_version: str | None) -> str:
    """``base_image`` with its Python version replaced by ``.python-version``'s, when both are
    of the official ``python:X.Y[-variant]`` form; otherwise ``base_image`` unchanged."""
    if not python_version:
        return base_image
    wanted = _PYTHON_VERSION.match(python_version.strip())
    base = _PYTHON_BASE.match(base_image)
    if wanted is None or base is None:
        return base_image
    return f"{base.group('repo')}:{wanted.group(1)}{base.group('rest') or ''}"


def default_command(port: int) -> list[str]:
    """Streamlit on ``app.py``, as in local mode, but listening on every address of the pod."""
    return [
        "python", "-m", "streamlit", "run", "app.py",
        "--server.port", str(port),
        "--server.address", "0.0.0.0",  # noqa: S104 - the pod's port is the only way in
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def render_dockerfile(
    *,
    base_image: str,
    files: Collection[str],
    port: int = DEFAULT_PORT,
    run_command: Sequence[str] | None = None,
    system_packages: Sequence[str] = (),
) -> str:
    """The Dockerfile for an app without one.

    ``files`` are the repository's paths (at least its dependency files); ``run_command`` is
    ``nakama.toml``'s ``run`` split into arguments (``$PORT`` is expanded), None for Streamlit;
    ``system_packages`` the Debian packages of ``packages.txt``
    (:func:`image_builder.system_packages.package_names`). With a lock file, the build context
    must hold its pinned requirements as ``nakama-requirements.txt``. Labels are not written
    here: the build step sets them, for generated and own Dockerfiles alike.
    """
    if not _IMAGE_REF.match(base_image):
        raise InvalidInput(f"not an image reference: {base_image!r}")
    if not 0 < port < 65536:
        raise InvalidInput(f"port must be 1-65535, got {port}")
    for name in system_packages:  # checked again here: these words reach a shell
        if not DEBIAN_NAME.match(name):
            raise InvalidInput(f"not a Debian package name: {name[:80]!r}")
    command = (
        default_command(port) if run_command is None else expand_port(list(run_command), port=port)
    )
    if not command:
        raise InvalidInput("the run command is empty")
    present = set(files)
    lines = [
        "# Generated by Nakama for an app without a Dockerfile.",
        f"FROM {base_image}",
        "ENV PYTHONUNBUFFERED=1 \\",
        "    PYTHONDONTWRITEBYTECODE=1 \\",
        "    PIP_NO_CACHE_DIR=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1",
        "WORKDIR /app",
    ]
    if system_packages:
        lines += [
            "# packages.txt",
            "RUN export DEBIAN_FRONTEND=noninteractive \\",
            "    && apt-get update \\",
            "    && apt-get install --yes --no-install-recommends \\",
            *(f"        {name} \\" for name in system_packages),
            "    && rm -rf /var/lib/apt/lists/*",
        ]
    source = choose_source(present)
    spec: str | None = None
    if source is not None and source.is_lock:
        spec = LOCKED_REQUIREMENTS
        lines.append(f"# {source.file}, pinned into {LOCKED_REQUIREMENTS} by nakama build")
        lines.append(f"COPY {json.dumps([spec, './'])}")
    elif source is not None and source.file == REQUIREMENTS:
        spec = REQUIREMENTS
        requirements = sorted(p for p in present if REQUIREMENTS_FILE.match(p))
        lines.append(f"COPY {json.dumps([*requirements, './'])}")
    elif source is not None and source.file == PYPROJECT:
        spec = PYPROJECT
        lines.append(f"COPY {json.dumps([PYPROJECT, './'])}")
    if spec is not None:
        # The dependencies get their own layer, under the code. uv is only the installer: it is
        # removed in the same step, so no layer keeps it.
        lines += [
            "RUN pip install uv \\",
            f"    && uv pip install --system --no-cache -r {spec} \\",
            "    && pip uninstall --yes uv",
        ]
    lines += [
        "COPY . .",
        f"USER {APP_USER}",
        # No home directory exists for the numeric user; Streamlit writes a little under $HOME.
        # Streamlit settings apply to an own run command too: no browser, no usage statistics.
        f"ENV HOME=/tmp PORT={port} \\",
        "    STREAMLIT_SERVER_HEADLESS=true \\",
        "    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false",
        f"EXPOSE {port}",
        f"CMD {json.dumps(command)}",
    ]
    return "\n".join(lines) + "\n"
