"""An app image made without a container runtime, decided without I/O: which builder a commit
needs, and the config and manifest of base image + environment layer.

Nakama knows what an app image is: a Python base image and one layer holding the virtualenv built
from the dependency files, at :data:`VENV` (the app's code comes from its code volume, not the
image: see :mod:`flux.manifests`). So, as ko and Jib do, ``nakama build`` writes that layer
itself and pushes the base's layers, the new layer, a new config and a manifest; nothing runs
inside a container, and the CI job needs no privileges. The config is the base's with:

* the layer's ``diff_id`` appended to ``rootfs.diff_ids`` and a ``history`` entry for it;
* ``PATH`` starting with the environment's ``bin``, ``VIRTUAL_ENV``, and what the generated
  Dockerfile sets (``PYTHONUNBUFFERED``, ``HOME=/tmp``, ``PORT``, Streamlit's headless settings);
* ``Cmd`` the app's run command (``nakama.toml``'s ``run`` or Streamlit on ``app.py``), no
  ``Entrypoint``, user 10001, the port exposed, the build's labels over the base's.

Only a repository's own ``Dockerfile`` (its steps can be anything) and ``packages.txt`` (Debian
packages need ``apt-get`` in a ``RUN`` step) still need buildah (:func:`choose_builder`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from image_builder.dockerfile import APP_USER, DEFAULT_PORT, default_command
from image_builder.system_packages import PACKAGES_FILE
from nakama.appconfig import expand_port
from nakama.clients.oci import DOCKER_MANIFEST, OCI_MANIFEST
from nakama.errors import InvalidInput, PermanentError

VENV = "/opt/nakama/venv"  # the environment's place in the image
WORKDIR = "/app"  # as the generated Dockerfile's WORKDIR; the Deployment sets its own
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Builder = Literal["layer", "buildah"]
BUILDERS: tuple[str, ...] = ("auto", "layer", "buildah")

_MEDIA = {
    OCI_MANIFEST: (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    DOCKER_MANIFEST: (
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
}
_PYTHON_VERSION_ENV = re.compile(r"^PYTHON_VERSION=(\d+)\.(\d+)")


@dataclass(frozen=True)
class BuilderChoice:
    builder: Builder
    reason: str


def choose_builder(wanted: str, paths: Collection[str]) -> BuilderChoice:
    """Which builder makes the image of a commit with ``paths``; ``wanted`` is ``nakama
    build --builder``: ``auto``, ``layer`` or ``buildah``."""
    if wanted not in BUILDERS:
        raise InvalidInput(f"--builder must be one of {', '.join(BUILDERS)}, got {wanted!r}")
    own = "Dockerfile" in paths
    if wanted == "layer" and own:
        raise PermanentError(
            "the repository has its own Dockerfile, which only the buildah builder can build"
        )
    if wanted == "buildah":
        return BuilderChoice("buildah", "asked for (--builder buildah)")
    if own:
        return BuilderChoice("buildah", "the repository has its own Dockerfile")
    if PACKAGES_FILE in paths:
        if wanted == "layer":
            raise PermanentError(
                f"{PACKAGES_FILE} needs apt-get in a RUN step, which only the buildah builder "
                f"runs: remove --builder layer, or the file"
            )
        return BuilderChoice("buildah", f"{PACKAGES_FILE} needs apt-get in a RUN step")
    return BuilderChoice("layer", "base image + one environment layer, no container runtime")


def python_mismatch(base_config: Mapping[str, Any], version: tuple[int, int]) -> str | None:
    """Why the environment, built with Python ``version``, would not run on the base image
    (its ``PYTHON_VERSION``, which the official images set, names another X.Y); None if it
    would or the base does not say."""
    for item in (base_config.get("config") or {}).get("Env") or ():
        match = _PYTHON_VERSION_ENV.match(str(item))
        if match is None:
            continue
        base = (int(match.group(1)), int(match.group(2)))
        if base != version:
            return (
                f"the base image has Python {base[0]}.{base[1]}, this job {version[0]}."
                f"{version[1]}: the layer builder installs with the job's own Python, so the "
                "job must run in the base image (its image is the platform image, built FROM "
                "the base; see docs/cluster-install.md, 'The image builder')"
            )
    return None


def app_config(
    base: Mapping[str, Any],
    *,
    diff_id: str,
    labels: Mapping[str, str],
    port: int = DEFAULT_PORT,
    run_command: Sequence[str] | None = None,
    created: datetime,
    installed_from: str,
) -> dict[str, Any]:
    """The app image's config: ``base``'s (a parsed image config) with the environment layer
    ``diff_id`` on top, the environment on ``PATH`` and the app's command."""
    if not 0 < port < 65536:
        raise InvalidInput(f"port must be 1-65535, got {port}")
    command = (
        default_command(port) if run_command is None else expand_port(list(run_command), port=port)
    )
    if not command:
        raise InvalidInput("the run command is empty")
    config = copy.deepcopy(dict(base))
    when = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    inner: dict[str, Any] = dict(config.get("config") or {})
    env = _env_map(inner.get("Env") or ())
    path = env.get("PATH") or DEFAULT_PATH
    wanted = {
        "PATH": f"{VENV}/bin:{path}",
        "VIRTUAL_ENV": VENV,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # No home directory exists for the numeric user; Streamlit writes a little under $HOME.
        "HOME": "/tmp",  # noqa: S108 - as the generated Dockerfile
        "PORT": str(port),
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    inner["Env"] = [f"{k}={v}" for k, v in {**env, **wanted}.items()]
    inner["Cmd"] = command
    inner.pop("Entrypoint", None)  # the app's command alone, whatever the base had
    inner["User"] = APP_USER
    inner["WorkingDir"] = WORKDIR
    inner["ExposedPorts"] = {**(inner.get("ExposedPorts") or {}), f"{port}/tcp": {}}
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    config["config"] = inner
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or ()), diff_id]
    config["rootfs"] = rootfs
    history = {
        "created": when,
        "created_by": f"nakama build: uv pip install from {installed_from} into {VENV}",
        "comment": "the app's Python environment",
    }
    config["history"] = [*(config.get("history") or ()), history]
    config["created"] = when
    return config


def app_manifest(
    base_manifest: Mapping[str, Any],
    *,
    media_type: str,
    config: bytes,
    config_digest: str,
    layer_digest: str,
    layer_size: int,
) -> dict[str, Any]:
    """The app image's manifest: the base's layers, then the environment layer. The format
    (OCI or Docker v2) is the base manifest's, ``media_type``: the two do not mix."""
    if media_type not in _MEDIA:
        raise PermanentError(f"base image manifest of type {media_type!r} is not supported")
    config_type, layer_type = _MEDIA[media_type]
    layers = [dict(layer) for layer in base_manifest.get("layers") or ()]
    layers.append({"mediaType": layer_type, "digest": layer_digest, "size": layer_size})
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    manifest["config"] = {"mediaType": config_type, "digest": config_digest, "size": len(config)}
    manifest["layers"] = layers
    return manifest


def canonical(document: Mapping[str, Any]) -> bytes:
    """The bytes pushed for a config or manifest: sorted keys, no spaces (a stable digest)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _env_map(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        env[key] = value
    return env
