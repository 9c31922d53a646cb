"""Nakama running from a virtualenv (the ``.venv`` scripts/up makes): an app environment built
with that venv's ``bin/python`` must run in the sandbox, which binds only the real Python
installation and not Nakama's virtualenv. uv links an environment's python to the path it is
given, so the builder hands it the resolved interpreter."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from image_builder.environments import BuildSandbox, build_environment
from nakama.clients.sandbox import Jail, Sandbox, SandboxUnavailable, python_roots
from nakama.settings import BuilderSettings
from nakama.tagging import dependency_hash

UID = 399_997
BUILDER_UID = 399_996
ROOT = os.geteuid() == 0


def test_an_environment_built_from_nakamas_venv_runs_in_the_sandbox(tmp_path: Path) -> None:
    sandbox = Sandbox("bwrap")
    try:
        sandbox.check()
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    nakama_venv = tmp_path / "nakama-venv"
    subprocess.run(
        [os.path.realpath(sys.executable), "-m", "venv", "--without-pip", str(nakama_venv)],
        check=True,
    )
    venv_python = nakama_venv / "bin" / "python"
    assert venv_python.is_symlink()  # the case: a link to the real interpreter

    source = tmp_path / "src"
    source.mkdir()
    (source / "requirements.txt").write_text("")
    dep_hash = dependency_hash({"requirements.txt": b""})
    settings = BuilderSettings(python=str(venv_python), uv_cache_dir=tmp_path / "cache")
    # built as the local runtime builds: sandboxed, as a uid of its own when root
    build_sandbox = BuildSandbox(
        sandbox=sandbox,
        builder_uid=BUILDER_UID if ROOT else None,
        project_uid=lambda project: UID if ROOT else None,
    )
    envs = tmp_path / "envs"
    envs.mkdir()
    env, _ = build_environment(
        envs_dir=envs, dep_hash=dep_hash, tag="main-0123abcd-20260101000000",
        source_dir=source, settings=settings, log=io.StringIO(), project="alice-app",
        sandbox=build_sandbox,
    )  # fmt: skip
    assert str(nakama_venv) not in os.path.realpath(env.python)

    # The app's view: its environment and the Python installation behind it, nothing else.
    jail = Jail(ro=(env.path, *python_roots(env.python)), rw=(), cwd=env.path, uid=UID)
    argv = sandbox.wrap([str(env.python), "-c", "import sys; print(sys.prefix)"], jail)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(env.path)
