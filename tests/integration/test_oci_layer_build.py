"""``nakama build``'s layer builder end to end: real git, a real registry (docker-registry with
Basic auth), a real package from PyPI (six), no container runtime.

The base image is made here: no python image can be pulled on these machines, so it holds this
machine's own Python interpreter at its own path, with the part of the standard library that
Python's startup and ``import six`` load, and its shared libraries (a few MB; what
``tests.registry.python_rootfs`` copies). The build job runs on this machine, where that same
interpreter lives at that same path: the situation of a CI job running in its base image. The
image is pulled back, its layers unpacked in order with whiteouts honoured, and Python is run
inside the unpacked root (bubblewrap, as uid 10001 without capabilities, the root read-only, as
the pod runs it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.build import build_main
from image_builder.dockerfile import DEPENDENCY_HASH_LABEL, REVISION_LABEL, default_command
from image_builder.layer import LAYER_MTIME
from image_builder.oci_image import VENV
from nakama.clients.oci import OciClient
from nakama.errors import NotFound
from nakama.tagging import dependency_hash
from tests.integration.test_build_cli import Repo
from tests.registry import (
    PASSWORD,
    USERNAME,
    Registry,
    pull_rootfs,
    push_rootfs_image,
    python_rootfs,
    registry_server,
)

BASE_REPO = "nakama/python"
BASE_TAG = "3.11-slim"
SIX_IMPORTS = ("__future__", "functools", "itertools", "operator", "types", "importlib.util")
PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_server(tmp_path_factory.mktemp("registry"), with_auth=True) as reg:
        yield reg


@pytest.fixture(scope="module")
def base_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    rootfs = tmp_path_factory.mktemp("base-rootfs")
    env = python_rootfs(rootfs, python=PYTHON, imports=SIX_IMPORTS)
    (rootfs / "junk").mkdir()
    (rootfs / "junk" / "old.txt").write_text("deleted by the base's second layer\n")
    push_rootfs_image(registry, BASE_REPO, BASE_TAG, rootfs, env=env, whiteouts=("junk/old.txt",))
    return f"{registry.host}/{BASE_REPO}:{BASE_TAG}"


def build(
    repo: Repo, sha: str, registry: Registry, tmp_path: Path, *extra: str, app: str = "demo"
) -> tuple[int, str, str]:
    password = tmp_path / "registry-password"
    password.write_text(f"{PASSWORD}\n")
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "--repo", str(repo.bare), "--commit", sha,
        "--image", f"{registry.host}/nakama-apps/{app}",
        "--registry-username", USERNAME, "--registry-password-file", str(password),
        "--no-tls-verify",
        # Were buildah run, the build would fail: the layer builder needs no container runtime.
        "--buildah", str(tmp_path / "no-buildah-here"),
        *extra,
    ]  # fmt: skip
    saved, sys.stderr = sys.stderr, err
    try:
        code = build_main(argv, out=out)
    finally:
        sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def run_in(rootfs: Path, env: list[str], *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` inside ``rootfs`` (read-only), as uid 10001 with no capabilities."""
    setenv = [arg for item in env for arg in ("--setenv", *item.split("=", 1))]
    return subprocess.run(
        [
            "bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--unshare-all", "--uid", "10001", "--gid", "10001",
            "--cap-drop", "ALL", "--clearenv", *setenv, "--chdir", "/", *command,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_an_image_built_without_a_container_runtime_runs_its_environment(
    registry: Registry, base_image: str, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "app")
    sha = repo.commit({"app.py": "import six\n", "requirements.txt": "six==1.17.0\n"})
    code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base_image)
    assert code == 0, out + err
    assert "builder: layer" in out
    # Both layers of the base were mounted from its repository, not sent again.
    assert "base layers: 2 mounted, 0 copied, 0 there already" in out

    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        [tag] = client.list_tags("nakama-apps/demo")
    rootfs = tmp_path / "rootfs"
    pulled = pull_rootfs(registry, "nakama-apps/demo", tag, rootfs)
    config = pulled.config
    inner = config["config"]
    assert isinstance(inner, dict)
    env = inner["Env"]
    assert f"PATH={VENV}/bin:{Path(PYTHON).parent}:/usr/local/bin:/usr/bin:/bin" in env
    assert f"VIRTUAL_ENV={VENV}" in env and "PORT=8501" in env
    assert inner["Cmd"] == default_command(8501)
    assert "Entrypoint" not in inner and inner["User"] == "10001:10001"
    assert inner["Labels"][DEPENDENCY_HASH_LABEL] == dependency_hash(
        {"requirements.txt": b"six==1.17.0\n"}
    )
    assert inner["Labels"][REVISION_LABEL] == sha
    rootfs_field = config["rootfs"]
    assert isinstance(rootfs_field, dict)
    assert len(rootfs_field["diff_ids"]) == len(pulled.layer_digests) == 3
    assert len(config["history"]) == 3  # type: ignore[arg-type]

    # The new layer: diff_id = sha256 of the tar, every entry root's, at the fixed time.
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        blob = tmp_path / "layer.gz"
        client.download_blob("nakama-apps/demo", pulled.layer_digests[-1], blob)
    tar_bytes = gzip.decompress(blob.read_bytes())
    assert rootfs_field["diff_ids"][-1] == f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in members} == {(0, 0, "", LAYER_MTIME)}
    names = [m.name for m in members]
    assert names[:3] == ["opt", "opt/nakama", "opt/nakama/venv"] and names == sorted(names)
    assert all(m.name.startswith("opt/nakama/venv") for m in members[2:])

    # Whiteouts of the base were honoured, and the environment is where PATH says.
    assert not (rootfs / "junk" / "old.txt").exists() and (rootfs / "junk").is_dir()
    site = rootfs / VENV.strip("/") / "lib" / "python3.11" / "site-packages"
    assert (site / "six.py").is_file()
    pyc = site / "__pycache__" / "six.cpython-311.pyc"
    assert pyc.read_bytes()[4:8] == b"\x01\x00\x00\x00"  # unchecked-hash: valid at any mtime

    ran = run_in(
        rootfs, env, "python", "-c",
        "import os, six, sys; print(six.__file__, sys.prefix, os.getuid(), six.PY3)",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    six_file = f"{VENV}/lib/python3.11/site-packages/six.py"
    assert ran.stdout.split() == [six_file, VENV, "10001", "True"]


def test_the_same_dependencies_give_the_same_layer_in_another_app(
    registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """Reproducible: a second app with the same dependency files gets a layer with the same
    digest (the registry keeps it once), while each app has its own repository and tag."""
    digests = []
    for app in ("alpha", "beta"):
        repo = Repo(tmp_path / app)
        sha = repo.commit({"app.py": f"print({app!r})\n", "requirements.txt": "six==1.17.0\n"})
        code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base_image, app=app)
        assert code == 0, out + err
        with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
            [tag] = client.list_tags(f"nakama-apps/{app}")
            manifest = client.get_manifest(f"nakama-apps/{app}", tag)
            labels = client.image_labels(f"nakama-apps/{app}", tag)
        assert labels[REVISION_LABEL] == sha
        digests.append(manifest["layers"][-1]["digest"])
    assert digests[0] == digests[1]


def test_a_base_with_another_python_is_refused(registry: Registry, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    env = python_rootfs(rootfs, python=PYTHON)
    env["PYTHON_VERSION"] = "3.12.4"
    push_rootfs_image(registry, BASE_REPO, "3.12-slim", rootfs, env=env)
    repo = Repo(tmp_path / "app")
    sha = repo.commit({"app.py": "\n", "requirements.txt": "six\n"})
    base = f"{registry.host}/{BASE_REPO}:3.12-slim"
    code, _, err = build(repo, sha, registry, tmp_path, "--base-image", base, app="py312")
    assert code == 1
    assert "the base image has Python 3.12, this job 3.11" in err
    with (
        OciClient(registry.url, username=USERNAME, password=PASSWORD) as client,
        pytest.raises(NotFound),
    ):
        client.list_tags("nakama-apps/py312")  # nothing was pushed


def test_an_own_dockerfile_is_not_given_to_the_layer_builder(
    registry: Registry, base_image: str, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "app")
    sha = repo.commit({"app.py": "\n", "Dockerfile": "FROM scratch\n"})
    code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base_image,
                           "--builder", "layer", app="own")  # fmt: skip
    assert code == 1
    assert "has its own Dockerfile, which only the buildah builder can build" in err
    # auto picks buildah for it, and says what the runner must allow.
    code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base_image, app="own")
    assert code == 1 and "builder: buildah: the repository has its own Dockerfile" in out
    assert "no-buildah-here is not installed" in err


LOCKS = Path(__file__).resolve().parent.parent / "data" / "lockfiles"


@pytest.mark.parametrize(("kind", "lock"), [("uv", "uv.lock"), ("poetry", "poetry.lock"),
                                            ("pipenv", "Pipfile.lock")])  # fmt: skip
def test_a_lock_file_is_what_the_layer_holds(
    kind: str, lock: str, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    files = {p.name: p.read_text() for p in (LOCKS / kind).iterdir()}
    files |= {"app.py": "", "requirements.txt": "pyflakes==3.2.0\n"}
    repo = Repo(tmp_path / "app")
    sha = repo.commit(files)
    code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base_image, app=kind)
    assert code == 0, out + err
    assert f"not used: requirements.txt ({lock} comes first)" in out
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        [tag] = client.list_tags(f"nakama-apps/{kind}")
    rootfs = tmp_path / "rootfs"
    pulled = pull_rootfs(registry, f"nakama-apps/{kind}", tag, rootfs)
    site = rootfs / VENV.strip("/") / "lib" / "python3.11" / "site-packages"
    assert (site / "six.py").is_file()  # what the lock pins
    assert not (site / "pyflakes").exists()  # the requirements.txt it overrides
    history = pulled.config["history"]
    assert isinstance(history, list)
    assert history[-1]["created_by"] == f"nakama build: uv pip install from {lock} into {VENV}"


def test_a_base_in_another_registry_is_copied_layer_by_layer(
    registry: Registry, tmp_path: Path
) -> None:
    """The base lies in a second registry (anonymous reads, as a public one): its layers are
    read from there, their digests checked, and uploaded to the app's registry."""
    rootfs = tmp_path / "base"
    rootfs.mkdir()
    env = python_rootfs(rootfs, python=PYTHON, imports=SIX_IMPORTS)
    with registry_server(tmp_path / "public") as public:
        base_digest = push_rootfs_image(public, "library/python", "3.11", rootfs, env=env)
        repo = Repo(tmp_path / "app")
        sha = repo.commit({"app.py": "\n", "requirements.txt": "six==1.17.0\n"})
        base = f"{public.host}/library/python:3.11"
        code, out, err = build(repo, sha, registry, tmp_path, "--base-image", base, app="copied")
        assert code == 0, out + err
        assert f"base: {base} ({base_digest}, 1 layer(s))" in out
        assert "base layers: 0 mounted, 1 copied, 0 there already" in out
        with OciClient(public.url) as source:
            base_layer = source.get_manifest("library/python", "3.11")["layers"][0]
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        [tag] = client.list_tags("nakama-apps/copied")
        layers = client.get_manifest("nakama-apps/copied", tag)["layers"]
        assert layers[0] == base_layer
        assert client.blob_size("nakama-apps/copied", base_layer["digest"]) == base_layer["size"]
