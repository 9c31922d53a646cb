"""``nakama build`` under the restrictions of an ordinary GitLab runner pod: a non-root user
(10001, the platform image's, with its /etc/passwd and subordinate id entries), no capabilities
at all (CAP_SYS_ADMIN, SETUID and SETGID included), no_new_privs (so newuidmap's setuid bit does
nothing), and no new user namespaces, as the default seccomp profile or a Pod Security
"restricted" namespace leaves a job. bubblewrap sets it up: the root file system read-only, the
job's work directory writable, the network shared (the registry is on loopback).

Under it, buildah cannot run a Dockerfile's ``RUN`` step and the job says why; the layer builder
builds and pushes the same kind of app, and the image runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nakama.clients.oci import OciClient
from nakama.errors import NotFound
from tests.integration.test_build_cli import Repo
from tests.integration.test_oci_layer_build import SIX_IMPORTS, run_in
from tests.registry import (
    PASSWORD,
    USERNAME,
    Registry,
    buildah_env,
    pull_rootfs,
    push_rootfs_image,
    python_rootfs,
    registry_server,
)

UID = 10001
PYTHON = os.path.realpath(sys.executable)
# What reaches the job of this machine's environment: the way to the package index.
_PASSED = ("SSL_CERT_FILE", "SSL_CERT_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX",
           "UV_EXTRA_INDEX_URL", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
           "HTTPS_PROXY", "NO_PROXY")  # fmt: skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_server(tmp_path_factory.mktemp("registry"), with_auth=True) as reg:
        yield reg


@pytest.fixture(scope="module")
def base_image(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    rootfs = tmp_path_factory.mktemp("base-rootfs")
    env = python_rootfs(rootfs, python=PYTHON, imports=SIX_IMPORTS)
    push_rootfs_image(registry, "nakama/python", "3.11-slim", rootfs, env=env)
    return f"{registry.host}/nakama/python:3.11-slim"


def runner_pod(job: Path, *command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` as a job in an unprivileged runner pod, ``job`` its only writable place."""
    etc = job / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        Path("/etc/passwd").read_text() + f"nakama:x:{UID}:{UID}::{job}:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(Path("/etc/group").read_text() + f"nakama:x:{UID}:\n")
    (etc / "subuid").write_text("nakama:100000:65536\n")  # as in the platform image
    passed = {k: v for k, v in os.environ.items() if k in _PASSED}
    setenv = [a for k, v in {**passed, **env}.items() for a in ("--setenv", k, v)]
    return subprocess.run(
        [
            "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--bind", str(job), str(job),
            "--ro-bind", str(etc / "passwd"), "/etc/passwd",
            "--ro-bind", str(etc / "group"), "/etc/group",
            "--ro-bind", str(etc / "subuid"), "/etc/subuid",
            "--ro-bind", str(etc / "subuid"), "/etc/subgid",
            "--unshare-user", "--uid", str(UID), "--gid", str(UID), "--disable-userns",
            "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", str(job),
            *setenv, "--chdir", str(job), *command,
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def nakama_build(job: Path, repo: Repo, sha: str, registry: Registry, *extra: str) -> tuple[
    subprocess.CompletedProcess[str], str
]:  # fmt: skip
    password = job / "registry-password"
    password.write_text(PASSWORD)
    image = f"{registry.host}/nakama-apps/{job.name}"
    storage = buildah_env(job / "buildah")
    done = runner_pod(
        job,
        sys.executable, "-m", "image_builder.build",
        "--repo", str(repo.bare), "--commit", sha, "--image", image,
        "--registry-username", USERNAME, "--registry-password-file", str(password),
        "--no-tls-verify", "--workdir", str(job / "work"), *extra,
        env=storage,
    )  # fmt: skip
    return done, f"nakama-apps/{job.name}"


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path


def test_the_profile_takes_what_a_runner_pod_takes(job: Path) -> None:
    """Checked first, so that the two builds below mean something: no capabilities, not root,
    no user namespace for buildah."""
    done = runner_pod(
        job, "sh", "-c", "id -u; grep CapEff /proc/self/status; unshare -U true || echo refused",
        env={},
    )  # fmt: skip
    lines = done.stdout.split("\n")
    assert lines[0] == str(UID)
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert "refused" in done.stdout


def test_a_dockerfile_fails_with_a_clear_message_and_pushes_nothing(
    registry: Registry, base_image: str, job: Path, tmp_path: Path
) -> None:
    repo = Repo(job / "app")  # the job sees its own directory only
    sha = repo.commit(
        {"app.py": "\n", "Dockerfile": f"FROM {base_image}\nRUN python -c 'print(1)'\n"}
    )
    done, repository = nakama_build(job, repo, sha, registry, "--base-image", base_image)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "builder: buildah: the repository has its own Dockerfile" in done.stdout
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("nakama build: error: buildah ")
    assert "requires a privileged or seccomp/AppArmor-unconfined runner" in error
    assert PASSWORD not in done.stdout + done.stderr
    with (
        OciClient(registry.url, username=USERNAME, password=PASSWORD) as client,
        pytest.raises(NotFound),
    ):
        client.list_tags(repository)


def test_the_layer_builder_succeeds_under_the_same_profile(
    registry: Registry, base_image: str, job: Path, tmp_path: Path
) -> None:
    repo = Repo(job / "app")  # the job sees its own directory only
    sha = repo.commit({"app.py": "import six\n", "requirements.txt": "six==1.17.0\n"})
    done, repository = nakama_build(job, repo, sha, registry, "--base-image", base_image)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "builder: layer" in done.stdout and "pushed: " in done.stdout
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        [tag] = client.list_tags(repository)
    rootfs = tmp_path / "rootfs"
    pulled = pull_rootfs(registry, repository, tag, rootfs)
    inner = pulled.config["config"]
    assert isinstance(inner, dict)
    ran = run_in(rootfs, inner["Env"], "python", "-c", "import six; print(six.__version__)")
    assert (ran.returncode, ran.stdout.strip()) == (0, "1.17.0"), ran.stderr
