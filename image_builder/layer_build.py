"""The layer path of ``nakama build``: an app image from its base image and one layer, with no
container runtime and no privileges (see :mod:`image_builder.oci_image` for what goes in it).

1. Read the base image's manifest (for an index, this machine's linux architecture) and config
   from its registry; refuse a base whose ``PYTHON_VERSION`` is not this job's Python.
2. Build the environment with uv: ``uv venv --relocatable`` from the job's interpreter (the CI job
   runs in the base image, so that interpreter is the image's, at the same path) into a
   directory of the workdir, ``uv pip install -r`` the chosen dependency file, then byte-compile
   it (unchecked-hash ``.pyc`` files whose paths name :data:`~image_builder.oci_image.VENV`: the
   app's root file system is read-only, so Python could not cache them at run time).
3. Write that directory as the layer at ``opt/nakama/venv`` (:mod:`image_builder.layer`).
4. Push: each base layer the app's repository lacks is mounted from the base's repository when
   both are in one registry, else copied through the workdir; then the new layer, the config,
   and the manifest under the build's tag.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from uv import find_uv_bin

from image_builder.layer import Layer, write_layer
from image_builder.oci_image import VENV, app_config, app_manifest, canonical, python_mismatch
from image_builder.process import run_step
from nakama.clients.oci import Manifest, OciClient, parse_image_reference, registry_api_url
from nakama.errors import PermanentError

_TAIL_LINES = 20
# What uv inherits of the job's environment: locale, proxies, certificates and package index.
_INHERITED = ("LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_NATIVE_TLS")
_INHERITED_PREFIXES = ("LC_", "UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX", "UV_SYSTEM_CERTS")
_PROXIES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class LayerJob:
    """One layer build: where the checkout is, what to install, and what to push where."""

    repository: str  # the app's repository in the target registry
    tag: str
    labels: Mapping[str, str]
    base_image: str  # a reference: python:3.11-slim, harbor.example.org/proxy/library/python:3.11
    registry_host: str  # the target registry's host, as in image names
    python: str  # the interpreter the environment is made from (the base image's)
    context: Path  # the checkout: the install runs here, so relative paths resolve
    workdir: Path
    requirements: str | None  # the file (relative to context) to install from, None = nothing
    installed_from: str  # for the image history
    port: int
    run_command: Sequence[str] | None
    created: datetime
    deadline: float
    timeout_s: float
    tls_verify: bool = True  # False: a base in another registry may be plain HTTP, unverified


@dataclass
class Pushed:
    """What the push sent: the manifest digest and the bytes that crossed the wire."""

    digest: str
    layer: Layer
    uploaded_bytes: int = 0
    mounted: int = 0
    present: int = 0
    copied: int = 0
    blobs: list[str] = field(default_factory=list)


def build_layer_image(job: LayerJob, *, registry: OciClient, out: TextIO) -> Pushed:
    """Build the environment, write its layer and push the image ``repository:tag``."""
    base = parse_image_reference(job.base_image)
    with _base_client(base.registry, base.api_host, job, registry) as source:
        manifest = source.fetch_image_manifest(
            base.repository, base.ref, architecture=_architecture()
        )
        base_manifest = manifest.json()
        base_config = source.get_config(base.repository, base_manifest)
        _say(out, "base", f"{base} ({manifest.digest}, {len(base_manifest.get('layers') or [])} "
             "layer(s))")  # fmt: skip
        version = _python_version(job.python)
        problem = python_mismatch(base_config, version)
        if problem is not None:
            raise PermanentError(problem)
        venv = job.workdir / "image" / "venv"
        _build_environment(job, venv, out)
        started = time.monotonic()
        layer = write_layer(venv, prefix=VENV, target=job.workdir / "layer.tar.gz")
        _say(out, "layer", f"{layer.digest} ({layer.entries} entries, {layer.tar_size} bytes, "
             f"{layer.size} compressed, {time.monotonic() - started:.1f} s)")  # fmt: skip
        config = app_config(
            base_config,
            diff_id=layer.diff_id,
            labels=job.labels,
            port=job.port,
            run_command=job.run_command,
            created=job.created,
            installed_from=job.installed_from,
        )
        pushed = Pushed(digest="", layer=layer)
        same_registry = base.registry == job.registry_host
        for descriptor in base_manifest.get("layers") or ():
            _push_base_layer(
                registry, source, descriptor, job=job, base_repo=base.repository,
                same_registry=same_registry, pushed=pushed,
            )  # fmt: skip
    if registry.push_blob(job.repository, layer.path, digest=layer.digest):
        pushed.uploaded_bytes += layer.size
    config_bytes = canonical(config)
    config_digest = _sha256(config_bytes)
    if registry.push_blob(job.repository, config_bytes, digest=config_digest):
        pushed.uploaded_bytes += len(config_bytes)
    body = canonical(
        app_manifest(
            base_manifest,
            media_type=manifest.media_type,
            config=config_bytes,
            config_digest=config_digest,
            layer_digest=layer.digest,
            layer_size=layer.size,
        )
    )
    pushed.digest = registry.put_manifest(
        job.repository,
        job.tag,
        Manifest(media_type=manifest.media_type, digest=_sha256(body), content=body),
    )
    pushed.uploaded_bytes += len(body)
    return pushed


# --- the environment ------------------------------------------------------------------------
def _build_environment(job: LayerJob, venv: Path, out: TextIO) -> None:
    if venv.exists():
        shutil.rmtree(venv)  # left by an earlier run in the same workdir
    venv.parent.mkdir(parents=True, exist_ok=True)
    uv = str(find_uv_bin())
    env = _uv_env(job.workdir)
    _step([uv, "venv", "--quiet", "--relocatable", "--python", job.python, str(venv)],
          job=job, env=env, out=out, what="uv venv")  # fmt: skip
    python = venv / "bin" / "python"
    if job.requirements is None:
        _say(out, "environment", "no dependency file: the environment has only the standard "
             "library")  # fmt: skip
    else:
        started = time.monotonic()
        install = [uv, "pip", "install", "--python", str(python), "-r", job.requirements]
        _step(install, job=job, env=env, out=out, what="uv pip install")
        _say(out, "environment", f"installed in {time.monotonic() - started:.1f} s")
    # Paths inside the .pyc files name the image's place, not the workdir's (tracebacks).
    compile_ = [
        str(python), "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash",
        "-s", str(venv), "-p", VENV, str(venv / "lib"),
    ]  # fmt: skip
    started = time.monotonic()
    result = run_step(compile_, out=out, deadline=job.deadline, cwd=job.workdir,
                      env=env, tail_lines=_TAIL_LINES)  # fmt: skip
    _say(out, "environment", f"byte-compiled in {time.monotonic() - started:.1f} s")
    if result.timed_out:
        raise PermanentError(f"build timed out after {job.timeout_s:g}s")
    if result.returncode != 0:  # a package's file Python cannot compile: it is never imported
        _say(out, "warning", "some files were not byte-compiled (see above); they still run")


def _step(
    args: list[str], *, job: LayerJob, env: Mapping[str, str], out: TextIO, what: str
) -> None:
    result = run_step(args, out=out, deadline=job.deadline, cwd=job.context, env=env,
                      tail_lines=_TAIL_LINES)  # fmt: skip
    if result.timed_out:
        raise PermanentError(f"build timed out after {job.timeout_s:g}s")
    if result.returncode != 0:
        last = " | ".join([line for line in result.tail if line.strip()][-3:])[-800:]
        raise PermanentError(f"{what} failed ({result.returncode}): {last}")


def _uv_env(workdir: Path) -> dict[str, str]:
    """uv's environment: the job's locale, proxies, certificates and package index, no
    configuration file of the repository's (a pushed ``uv.toml`` must not steer it), no
    Python downloads, a cache in the workdir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _INHERITED or k.startswith(_INHERITED_PREFIXES) or k.lower() in _PROXIES
    }
    env |= {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(workdir),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
        "UV_CACHE_DIR": str(workdir / "uv-cache"),
    }
    return env


def _python_version(python: str) -> tuple[int, int]:
    try:
        found = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        major, minor = found.split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise PermanentError(f"cannot run the Python {python}: {type(exc).__name__}") from None


# --- the registry ---------------------------------------------------------------------------
@contextmanager
def _base_client(
    host: str, api_host: str, job: LayerJob, registry: OciClient
) -> Iterator[OciClient]:
    """The base image's registry: the target one when the base lies there (its credentials,
    and blobs can be mounted), else that registry without credentials, over HTTPS (plain HTTP
    only where TLS verification is off and HTTPS is not spoken)."""
    if host == job.registry_host:
        yield registry
        return
    url = registry_api_url(api_host, tls_verify=job.tls_verify)
    with OciClient(url, verify=job.tls_verify) as other:
        yield other


def _push_base_layer(
    registry: OciClient,
    source: OciClient,
    descriptor: Mapping[str, Any],
    *,
    job: LayerJob,
    base_repo: str,
    same_registry: bool,
    pushed: Pushed,
) -> None:
    digest = str(descriptor.get("digest"))
    pushed.blobs.append(digest)
    if registry.blob_size(job.repository, digest) is not None:
        pushed.present += 1
        return
    if same_registry and registry.mount_blob(job.repository, digest, from_repo=base_repo):
        pushed.mounted += 1
        return
    blobs = job.workdir / "blobs"
    blobs.mkdir(exist_ok=True)
    target = blobs / digest.replace(":", "-")
    try:
        size = source.download_blob(base_repo, digest, target)
        registry.push_blob(job.repository, target, digest=digest)
    finally:
        target.unlink(missing_ok=True)
    pushed.copied += 1
    pushed.uploaded_bytes += size


def _architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, machine)


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _say(out: TextIO, step: str, message: str) -> None:
    out.write(f"{step}: {message}\n")
    out.flush()
