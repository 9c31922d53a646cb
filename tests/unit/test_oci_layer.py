"""The layer builder's decisions and its layer file: which builder a commit gets, the app image's
config and manifest, image references, and a layer's normalisation."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from image_builder.dockerfile import default_command
from image_builder.layer import LAYER_MTIME, _ParallelGzip, write_layer
from image_builder.oci_image import (
    VENV,
    app_config,
    app_manifest,
    canonical,
    choose_builder,
    python_mismatch,
)
from nakama.clients.oci import DOCKER_MANIFEST, OCI_MANIFEST, parse_image_reference
from nakama.errors import InvalidInput, PermanentError

BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHON_VERSION=3.11.9"],
        "Cmd": ["python3"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Labels": {"org.opencontainers.image.source": "base", "keep": "base"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]},
    "history": [{"created_by": "one"}, {"created_by": "ENV X=1", "empty_layer": True}, {}],
}
NOW = datetime(2026, 12, 4, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("wanted", "paths", "builder"),
    [
        ("auto", {"app.py", "requirements.txt"}, "layer"),
        ("auto", {"app.py"}, "layer"),
        ("auto", {"app.py", "Dockerfile"}, "buildah"),
        ("auto", {"app.py", "packages.txt"}, "buildah"),
        ("buildah", {"app.py", "requirements.txt"}, "buildah"),
        ("layer", {"app.py", "uv.lock", "pyproject.toml"}, "layer"),
    ],
)
def test_builder_choice(wanted: str, paths: set[str], builder: str) -> None:
    assert choose_builder(wanted, paths).builder == builder


@pytest.mark.parametrize("paths", [{"Dockerfile"}, {"packages.txt"}])
def test_the_layer_builder_refuses_what_needs_run_steps(paths: set[str]) -> None:
    with pytest.raises(PermanentError, match="only the buildah builder"):
        choose_builder("layer", paths)
    with pytest.raises(InvalidInput, match="--builder"):
        choose_builder("kaniko", paths)


def test_app_config_puts_the_environment_first_and_runs_the_app() -> None:
    config = app_config(
        BASE_CONFIG,
        diff_id="sha256:" + "c" * 64,
        labels={"dev.nakama.dependency-hash": "h", "keep": "ours"},
        created=NOW,
        installed_from="requirements.txt",
    )
    inner = config["config"]
    assert inner["Env"][0] == f"PATH={VENV}/bin:/usr/local/bin:/usr/bin:/bin"
    assert "LANG=C.UTF-8" in inner["Env"] and f"VIRTUAL_ENV={VENV}" in inner["Env"]
    assert "PYTHON_VERSION=3.11.9" in inner["Env"] and "HOME=/tmp" in inner["Env"]
    assert inner["Cmd"] == default_command(8501) and "Entrypoint" not in inner
    assert inner["User"] == "10001:10001" and inner["ExposedPorts"] == {"8501/tcp": {}}
    assert inner["Labels"] == {
        "org.opencontainers.image.source": "base",
        "keep": "ours",
        "dev.nakama.dependency-hash": "h",
    }
    assert config["rootfs"]["diff_ids"][-1] == "sha256:" + "c" * 64
    assert len(config["rootfs"]["diff_ids"]) == 3
    # One non-empty history entry per layer: the base's two, then ours.
    assert [h.get("empty_layer", False) for h in config["history"]] == [False, True, False, False]
    assert config["history"][-1]["created_by"].endswith(f"requirements.txt into {VENV}")
    assert config["created"] == "2026-12-04T03:00:00Z"
    assert BASE_CONFIG["config"]["Entrypoint"] == ["/docker-entrypoint.sh"]  # not changed


def test_app_config_takes_the_run_command_with_the_port() -> None:
    config = app_config(
        {"config": {}},
        diff_id="sha256:" + "c" * 64,
        labels={},
        port=9000,
        run_command=("uvicorn", "main:app", "--port", "$PORT"),
        created=NOW,
        installed_from="pyproject.toml",
    )
    assert config["config"]["Cmd"] == ["uvicorn", "main:app", "--port", "9000"]
    assert config["config"]["Env"][0].startswith(f"PATH={VENV}/bin:/usr/local/sbin")
    with pytest.raises(InvalidInput):
        app_config({}, diff_id="x", labels={}, port=0, created=NOW, installed_from="-")


@pytest.mark.parametrize(
    ("media", "config_type", "layer_type"),
    [
        (
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    ],
)
def test_manifest_keeps_the_base_format(media: str, config_type: str, layer_type: str) -> None:
    base = {"layers": [{"mediaType": layer_type, "digest": "sha256:" + "a" * 64, "size": 7}]}
    config = canonical({"a": 1})
    manifest = app_manifest(
        base,
        media_type=media,
        config=config,
        config_digest="sha256:" + "d" * 64,
        layer_digest="sha256:" + "e" * 64,
        layer_size=42,
    )
    assert manifest["mediaType"] == media
    assert manifest["config"] == {
        "mediaType": config_type,
        "digest": "sha256:" + "d" * 64,
        "size": len(config),
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == [layer_type, layer_type]
    assert manifest["layers"][-1]["size"] == 42
    with pytest.raises(PermanentError, match="not supported"):
        app_manifest(base, media_type="application/vnd.oci.image.index.v1+json", config=config,
                     config_digest="x", layer_digest="y", layer_size=1)  # fmt: skip


def test_python_mismatch() -> None:
    assert python_mismatch(BASE_CONFIG, (3, 11)) is None
    assert python_mismatch({"config": {"Env": ["PATH=/bin"]}}, (3, 12)) is None  # not said
    problem = python_mismatch(BASE_CONFIG, (3, 12))
    assert problem is not None and "base image has Python 3.11, this job 3.12" in problem


@pytest.mark.parametrize(
    ("name", "registry", "repository", "ref"),
    [
        ("python:3.11-slim", "docker.io", "library/python", "3.11-slim"),
        ("python", "docker.io", "library/python", "latest"),
        ("bitnami/python:3", "docker.io", "bitnami/python", "3"),
        ("127.0.0.1:5000/nakama/python:3.11", "127.0.0.1:5000", "nakama/python", "3.11"),
        (
            "harbor.example.org/proxy/library/python@sha256:" + "f" * 64,
            "harbor.example.org",
            "proxy/library/python",
            "sha256:" + "f" * 64,
        ),
    ],
)
def test_image_references(name: str, registry: str, repository: str, ref: str) -> None:
    parsed = parse_image_reference(name)
    assert (parsed.registry, parsed.repository, parsed.ref) == (registry, repository, ref)


@pytest.mark.parametrize("name", ["Python:3", "python:", "a//b", "python@sha256"])
def test_bad_image_references(name: str) -> None:
    with pytest.raises(InvalidInput):
        parse_image_reference(name)


def test_docker_hub_is_reached_at_its_api_host() -> None:
    assert parse_image_reference("python:3.11").api_host == "registry-1.docker.io"


def _tree(root: Path, *, mode: int) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o775 & mode)
    (root / "lib" / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "lib" / "pkg" / "mod.py").chmod(0o666 & mode)
    (root / "lib" / "pkg-a.txt").write_text("a\n")
    (root / "bin" / "python").symlink_to("/usr/local/bin/python3.11")
    os.link(root / "lib" / "pkg" / "mod.py", root / "lib" / "same.py")
    return root


def test_a_layer_is_the_same_for_the_same_files(tmp_path: Path) -> None:
    """Modes, owners, times and walk order of the files on disk leave the layer unchanged."""
    one = write_layer(_tree(tmp_path / "a", mode=0o777), prefix="/opt/nakama/venv/",
                      target=tmp_path / "a.tar.gz")  # fmt: skip
    os.utime(tmp_path / "a" / "lib" / "pkg-a.txt", (0, 12345))
    two = write_layer(_tree(tmp_path / "b", mode=0o755), prefix="opt/nakama/venv",
                      target=tmp_path / "b.tar.gz")  # fmt: skip
    assert one.digest == two.digest and one.diff_id == two.diff_id
    data = (tmp_path / "a.tar.gz").read_bytes()
    assert one.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    plain = gzip.decompress(data)
    assert one.diff_id == f"sha256:{hashlib.sha256(plain).hexdigest()}" and one.size == len(data)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members)[:4] == ["opt", "opt/nakama", "opt/nakama/venv", "opt/nakama/venv/bin"]
    assert list(members) == sorted(members)  # byte order: lib/pkg before lib/pkg-a.txt
    tool, mod = members["opt/nakama/venv/bin/tool"], members["opt/nakama/venv/lib/pkg/mod.py"]
    assert (tool.mode, mod.mode) == (0o755, 0o644)
    link = members["opt/nakama/venv/bin/python"]
    assert link.issym() and link.linkname == "/usr/local/bin/python3.11"
    assert members["opt/nakama/venv/lib/same.py"].isfile()  # a hard link is a file again
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {
        (0, 0, "", "", LAYER_MTIME)
    }


def test_a_layer_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(PermanentError, match="pipe: not a file"):
        write_layer(root, prefix="opt/x", target=tmp_path / "l.tar.gz")
    with pytest.raises(ValueError, match="prefix"):
        write_layer(root, prefix="../etc", target=tmp_path / "l.tar.gz")


def test_blocks_deflated_in_parallel_make_one_gzip_stream_whatever_the_cores(
    tmp_path: Path,
) -> None:
    """Several 1 MiB blocks (and a partial one): gzip reads them back as the tar, and one
    worker or four give the same bytes, so a digest does not depend on the runner's cores."""
    data = b"".join(hashlib.sha256(str(i).encode()).digest() * 40 for i in range(3000))
    outputs = []
    for workers in (1, 4):
        sink = io.BytesIO()
        writer = _ParallelGzip(sink, level=6, workers=workers)
        for start in range(0, len(data), 100_000):
            writer.write(data[start : start + 100_000])
        writer.close()
        outputs.append(sink.getvalue())
    assert outputs[0] == outputs[1]
    assert gzip.decompress(outputs[0]) == data and len(data) > 3 * 1024 * 1024
    assert len(outputs[0]) < len(data) // 10
    root = tmp_path / "tree"
    root.mkdir()
    (root / "big.bin").write_bytes(data)
    layer = write_layer(root, prefix="opt/x", target=tmp_path / "l.tar.gz")
    plain = gzip.decompress((tmp_path / "l.tar.gz").read_bytes())
    assert layer.diff_id == f"sha256:{hashlib.sha256(plain).hexdigest()}"
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        member = tar.extractfile("opt/x/big.bin")
        assert member is not None and member.read() == data
