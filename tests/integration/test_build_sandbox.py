"""Sandboxed builds with the real uv, bubblewrap and PyPI: dependency files that wheels alone
satisfy make an environment every project shares, built without running any package's code;
one that needs a package built from source is built in the project's own sandbox and stays the
project's: another project with the same dependency files never gets it (so nothing a build
runs, or leaves in its cache, reaches another project's environment); the build sees no
file of the repository but its dependency files, and none of Nakama's environment."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.environments import (
    BuildSandbox,
    build_environment,
    find_project_environment,
    private_envs_dir,
)
from nakama.clients.sandbox import Sandbox
from nakama.errors import PermanentError
from nakama.settings import BuilderSettings
from tests.support import serve_directory, write_sdist

ROOT = os.geteuid() == 0
BUILDER_UID, UIDS = 399_990, {"alice": 399_991, "bob": 399_992}

# A package with no wheel: its setup.py runs in the build and says what it can see.
SETUP = """\
import os, sys
from setuptools import setup
seen = sorted(os.listdir("."))
sys.stderr.write(f"SETUP uid={os.getuid()} env={sorted(k for k in os.environ if 'NAKAMA' in k)}\\n")
setup(name="probe", version="1.0", py_modules=["probe"])
"""


@pytest.fixture
def sandbox() -> BuildSandbox:
    return BuildSandbox(
        sandbox=Sandbox("bwrap"),
        builder_uid=BUILDER_UID if ROOT else None,
        project_uid=lambda project: UIDS[project] if ROOT else None,
    )


@pytest.fixture
def probe_url(tmp_path: Path) -> Iterator[str]:
    sdist = write_sdist(tmp_path / "served", "probe", "1.0", {"setup.py": SETUP, "probe.py": ""})
    with serve_directory(sdist.parent) as base:
        yield f"{base}/{sdist.name}"


def source(base: Path, requirements: str) -> Path:
    base.mkdir(parents=True)
    (base / "requirements.txt").write_text(requirements)
    (base / "app.py").write_text("print('the app')\n")
    (base / "local-secret.txt").write_text("not for the build")
    return base


def build(envs: Path, project: str, src: Path, sandbox: BuildSandbox, dep_hash: str) -> str:
    log = io.StringIO()
    build_environment(
        envs_dir=envs,
        dep_hash=dep_hash,
        tag=f"t-{dep_hash}",
        source_dir=src,
        settings=BuilderSettings(build_timeout_s=300),
        log=log,
        project=project,
        sandbox=sandbox,
    )
    return log.getvalue()


def test_wheels_only_environments_are_shared(
    tmp_path: Path, sandbox: BuildSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAKAMA_ADMIN_TOKEN", "nkm_must_not_reach_a_build")
    envs = tmp_path / "envs"
    log = build(envs, "alice", source(tmp_path / "a", "six==1.16.0\n"), sandbox, "h1")
    assert "(wheels only)" in log and "project's own sandbox" not in log
    for project in ("alice", "bob"):
        env = find_project_environment(envs, "h1", project)
        assert env is not None and env.path == envs / "h1"
    assert not private_envs_dir(envs, "alice").exists()


def test_a_source_build_is_the_projects_alone(
    tmp_path: Path, sandbox: BuildSandbox, probe_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAKAMA_ADMIN_TOKEN", "nkm_must_not_reach_a_build")
    envs = tmp_path / "envs"
    requirements = f"probe @ {probe_url}\n"
    log = build(envs, "bob", source(tmp_path / "b", requirements), sandbox, "h2")
    assert "Building source distributions for `probe` is disabled" in log  # wheels only: refused
    assert "project's own sandbox" in log
    bobs = find_project_environment(envs, "h2", "bob")
    assert bobs is not None and bobs.path == private_envs_dir(envs, "bob") / "h2"
    # Alice, with the same dependency files, does not get Bob's build: hers is her own.
    assert find_project_environment(envs, "h2", "alice") is None
    build(envs, "alice", source(tmp_path / "a", requirements), sandbox, "h2")
    alices = find_project_environment(envs, "h2", "alice")
    assert alices is not None and alices.path == private_envs_dir(envs, "alice") / "h2"
    assert not (envs / "h2").exists()
    if ROOT:  # each project's cache and environments are its own uid's
        assert (private_envs_dir(envs, "bob") / ".uv-cache").stat().st_uid == UIDS["bob"]
        assert (private_envs_dir(envs, "alice") / ".uv-cache").stat().st_uid == UIDS["alice"]


def test_a_build_sees_only_the_dependency_files(tmp_path: Path, sandbox: BuildSandbox) -> None:
    src = source(tmp_path / "c", "./local-secret.txt\n")
    with pytest.raises(PermanentError):
        build(tmp_path / "envs", "bob", src, sandbox, "h3")
    log = io.StringIO()
    with pytest.raises(PermanentError) as caught:
        build_environment(
            envs_dir=tmp_path / "envs",
            dep_hash="h3",
            tag="t",
            source_dir=src,
            settings=BuilderSettings(build_timeout_s=300),
            log=log,
            project="bob",
            sandbox=sandbox,
        )
    assert "is a path: a build has only the dependency files" in log.getvalue()
    assert "not for the build" not in log.getvalue() + str(caught.value)
