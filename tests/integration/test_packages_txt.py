"""Cluster builds (``nakama build`` with real git, buildah and registry) of apps that bring a
``packages.txt`` or a lock file: the generated Dockerfile installs the Debian packages with
apt-get (each name checked first, so nothing else reaches the shell) and the lock file's pinned
requirements; a malformed packages.txt or lock file fails the job before buildah runs, naming the
file and where, and pushes nothing. Local mode says it installs no system package, in the
pipeline log and on the project (API), instead of ignoring the file."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.build import build_main
from image_builder.environments import build_environment
from nakama.clients.oci import OciClient
from nakama.errors import NotFound
from nakama.settings import BuilderSettings
from tests.registry import PASSWORD, USERNAME, Registry, buildah_env, make_base_image
from tests.registry import registry_server as start_registry

BASE = "localhost/nakama-test/python:3.11-slim"
APT_BASE = "localhost/nakama-test/python-apt:3.11-slim"
DATA = Path(__file__).resolve().parent.parent / "data" / "lockfiles"
REPO = "nakama-apps/sysdeps"
_STUB = '#!/bin/sh\necho "stub {name} $*"\n'


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """buildah storage with a base image that has printing stand-ins for apt-get and rm too."""
    root = tmp_path_factory.mktemp("buildah")
    env = buildah_env(root / "storage")
    make_base_image(env, BASE, root)
    stubs = root / "stubs"
    stubs.mkdir()
    for name in ("apt-get", "rm"):
        (stubs / name).write_text(_STUB.format(name=name))
        (stubs / name).chmod(0o755)
    run = {**os.environ, **env}

    def buildah_cmd(*args: str) -> str:
        done = subprocess.run(["buildah", *args], env=run, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    container = buildah_cmd("from", BASE)
    buildah_cmd("copy", container, str(stubs), "/usr/local/bin/")
    buildah_cmd("commit", "--quiet", container, APT_BASE)
    buildah_cmd("rm", container)
    return env


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry"), with_auth=True) as reg:
        yield reg


@pytest.fixture(autouse=True)
def _buildah_storage(buildah: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in buildah.items():
        monkeypatch.setenv(key, value)


def _repo(base: Path, files: dict[str, str]) -> tuple[Path, str]:
    work, bare = base / "work", base / "app.git"
    base.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    for name, text in files.items():
        (work / name).write_text(text)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=work, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("add", "-A")
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "app")
    git("push", "-q", str(bare), "HEAD:main")
    return bare, git("rev-parse", "HEAD")


def _build(
    bare: Path, sha: str, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, Path]:
    password_file = tmp_path / "registry-password"
    password_file.write_text(PASSWORD)
    workdir = tmp_path / "job"
    code = build_main([
        "--repo", str(bare), "--commit", sha, "--image", f"{registry.host}/{REPO}",
        "--registry-username", USERNAME, "--registry-password-file", str(password_file),
        "--no-tls-verify", "--base-image", APT_BASE, "--workdir", str(workdir),
        "--builder", "buildah",  # lock files through the layer builder: test_oci_layer_build.py
    ])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err, workdir / "context"


def _tags(registry: Registry) -> list[str]:
    with OciClient(registry.url, username=registry.username, password=registry.password) as c:
        try:
            return c.list_tags(REPO)
        except NotFound:
            return []


@pytest.mark.slow
def test_packages_txt_is_installed_with_apt_get_in_the_image_build(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packages = "# what the app needs\nlibgl1\nffmpeg  # for video\n\nlibgl1\n"
    bare, sha = _repo(tmp_path / "repo", {"app.py": "", "packages.txt": packages,
                                          "requirements.txt": "six==1.17.0\n"})  # fmt: skip
    code, out, err, _ = _build(bare, sha, registry, tmp_path, capsys)
    assert (code, err) == (0, ""), out
    assert "packages: packages.txt: libgl1, ffmpeg" in out
    # The RUN step ran apt-get (the base's stand-in prints what it was given) before pip's.
    assert "stub apt-get update" in out
    assert "stub apt-get install --yes --no-install-recommends libgl1 ffmpeg" in out
    assert out.index("stub apt-get install") < out.index("stub uv pip install")
    assert any(tag.startswith(f"main-{sha[:8]}-") for tag in _tags(registry))


@pytest.mark.slow
@pytest.mark.parametrize(
    "line", ["libgl1; curl http://127.0.0.1:9/x | sh", "--allow-unauthenticated", "LibGL1"]
)
def test_a_line_that_is_not_a_package_name_fails_the_build_before_buildah(
    line: str, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(_tags(registry))
    bare, sha = _repo(tmp_path / "repo", {"app.py": "", "packages.txt": f"ffmpeg\n{line}\n"})
    code, out, err, _ = _build(bare, sha, registry, tmp_path, capsys)
    assert code == 1, out
    assert "nakama build: error: packages.txt:2:" in err
    assert "is not a Debian package name" in err
    assert "build:" not in out and "stub" not in out  # buildah never ran
    assert set(_tags(registry)) == before


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "lock"), [("uv", "uv.lock"), ("poetry", "poetry.lock"),
                                            ("pipenv", "Pipfile.lock")])  # fmt: skip
def test_a_lock_file_is_pinned_and_installed_in_the_image_build(
    kind: str,
    lock: str,
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {p.name: p.read_text() for p in (DATA / kind).iterdir()}
    files |= {"app.py": "", "requirements.txt": "pyflakes==3.2.0\n"}
    bare, sha = _repo(tmp_path / "repo", files)
    code, out, err, context = _build(bare, sha, registry, tmp_path, capsys)
    assert (code, err) == (0, ""), out
    assert f"dependencies: installing the Python dependencies from {lock}" in out
    assert f"not used: requirements.txt ({lock} comes first)" in out
    assert "stub uv pip install --system --no-cache -r nakama-requirements.txt" in out
    pinned = (context / "nakama-requirements.txt").read_text()
    assert "six==1.17.0" in pinned and "--hash=sha256:" in pinned
    assert "pyflakes" not in pinned


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "lock", "broken", "expected"),
    [
        ("uv", "uv.lock", ('name = "six"', 'name = "six'), "uv.lock could not be read"),
        ("poetry", "poetry.lock", ('name = "six"', 'name = "six'), "poetry.lock: Illegal char"),
        ("pipenv", "Pipfile.lock", ('"six": {', '"six": {,'), "Pipfile.lock: Expecting"),
    ],
)
def test_a_malformed_lock_file_fails_the_build_naming_the_file_and_line(
    kind: str,
    lock: str,
    broken: tuple[str, str],
    expected: str,
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = set(_tags(registry))
    files = {p.name: p.read_text() for p in (DATA / kind).iterdir()} | {"app.py": ""}
    files[lock] = files[lock].replace(*broken, 1)
    bare, sha = _repo(tmp_path / "repo", files)
    code, out, err, _ = _build(bare, sha, registry, tmp_path, capsys)
    assert code == 1, out
    assert expected in err and "line" in err, err
    assert "build:" not in out
    assert set(_tags(registry)) == before


def test_local_mode_says_it_installs_no_system_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "packages.txt").write_text("libgl1\nffmpeg\n")
    log = io.StringIO()
    env, _ = build_environment(
        envs_dir=tmp_path / "envs", dep_hash="0123456789abcdef", tag="t", source_dir=src,
        settings=BuilderSettings(build_timeout_s=120), log=log,
    )  # fmt: skip
    expected = "packages.txt lists libgl1, ffmpeg: system packages are not installed in local mode"
    assert f"note: {expected}" in log.getvalue()
    assert any(note.startswith(expected) for note in env.notes)
    shutil.rmtree(tmp_path / "envs")
