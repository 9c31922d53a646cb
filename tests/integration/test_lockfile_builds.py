"""Local environments built from lock files (uv.lock, poetry.lock, Pipfile.lock made by the real
tools: tests/data/lockfiles/) with the real uv against the package index, unsandboxed and in the
bubblewrap sandbox: what is installed is the lock's main dependencies at their locked versions,
not the dev group, not what a marker excludes; a malformed lock fails the build naming the file
and where, and publishes nothing."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from image_builder.environments import BuildSandbox, build_environment, find_environment
from image_builder.lockfiles import LOCKED_REQUIREMENTS, LockFileError
from nakama.clients.sandbox import Sandbox
from nakama.settings import BuilderSettings
from nakama.tagging import dependency_hash

DATA = Path(__file__).resolve().parent.parent / "data" / "lockfiles"
ROOT = os.geteuid() == 0
LOCKS = {"uv": "uv.lock", "poetry": "poetry.lock", "pipenv": "Pipfile.lock"}
# Requirements each lock pins for the main group: Poetry's has colorama too (Windows only).
PINNED = {"uv": 3, "poetry": 4, "pipenv": 3}


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(params=["plain", "sandboxed"])
def sandbox(request: pytest.FixtureRequest) -> BuildSandbox | None:
    if request.param == "plain":
        return None
    return BuildSandbox(
        sandbox=Sandbox("bwrap"),
        builder_uid=399_980 if ROOT else None,
        project_uid=lambda _project: 399_981 if ROOT else None,
    )


def _source(base: Path, kind: str, extra: dict[str, str] | None = None) -> tuple[Path, str]:
    shutil.copytree(DATA / kind, base)
    (base / "app.py").write_text("print('the app')\n")
    for name, text in (extra or {}).items():
        (base / name).write_text(text)
    files = {p.name: p.read_bytes() for p in base.iterdir() if p.name != "app.py"}
    return base, dependency_hash(files)


def _build(
    tmp_path: Path, src: Path, dep_hash: str, uv_cache: Path, sandbox: BuildSandbox | None
) -> tuple[Path, str]:
    log = io.StringIO()
    settings = BuilderSettings(build_timeout_s=300, uv_cache_dir=uv_cache)
    env, built = build_environment(
        envs_dir=tmp_path / "envs", dep_hash=dep_hash, tag=f"t-{dep_hash}", source_dir=src,
        settings=settings, log=log, project="alice", sandbox=sandbox,
    )  # fmt: skip
    assert built
    return env.python, log.getvalue()


def _installed(python: Path) -> dict[str, str]:
    code = "import importlib.metadata as m; print('\\n'.join(f'{d.metadata[\"Name\"].lower()}=={d.version}' for d in m.distributions()))"  # noqa: E501
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return dict(line.split("==", 1) for line in out.stdout.split())


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_an_environment_is_built_from_each_lock_type(
    kind: str, tmp_path: Path, uv_cache: Path, sandbox: BuildSandbox | None
) -> None:
    src, dep_hash = _source(tmp_path / "src", kind)
    python, log = _build(tmp_path, src, dep_hash, uv_cache, sandbox)
    installed = _installed(python)
    # The locked versions: six is 1.17.0 in every lock (a plain install would take the newest).
    assert installed.get("python-dateutil") == "2.9.0.post0", installed
    assert installed.get("six") == "1.17.0", installed
    assert "pyflakes" not in installed  # the dev group's
    assert "tomli" not in installed and "colorama" not in installed  # markers exclude them here
    assert f"installing the Python dependencies from {LOCKS[kind]}" in log
    assert f"{LOCKS[kind]}: {PINNED[kind]} package(s) pinned" in log
    pinned = (python.parent.parent / LOCKED_REQUIREMENTS).read_text()
    assert "six==1.17.0" in pinned and "--hash=sha256:" in pinned


def test_uv_lock_comes_first_and_the_log_says_what_was_not_used(
    tmp_path: Path, uv_cache: Path
) -> None:
    src, dep_hash = _source(
        tmp_path / "src", "uv", {"requirements.txt": "pyflakes==3.2.0\n", "Pipfile.lock": "{}"}
    )
    python, log = _build(tmp_path, src, dep_hash, uv_cache, None)
    installed = _installed(python)
    assert installed.get("six") == "1.17.0" and "pyflakes" not in installed
    assert "not used: Pipfile.lock, requirements.txt (uv.lock comes first)" in log


@pytest.mark.parametrize(
    ("kind", "lock", "broken", "expected"),
    [
        ("uv", "uv.lock", ('name = "six"', 'name = "six'), "uv.lock could not be read"),
        ("poetry", "poetry.lock", ('name = "six"', 'name = "six'), "poetry.lock: Illegal char"),
        ("pipenv", "Pipfile.lock", ('"six": {', '"six": {,'), "Pipfile.lock: Expecting"),
    ],
)
def test_a_malformed_lock_fails_the_build_naming_the_file_and_line(
    kind: str,
    lock: str,
    broken: tuple[str, str],
    expected: str,
    tmp_path: Path,
    uv_cache: Path,
    sandbox: BuildSandbox | None,
) -> None:
    src, _ = _source(tmp_path / "src", kind)
    text = (src / lock).read_text()
    assert broken[0] in text
    (src / lock).write_text(text.replace(broken[0], broken[1], 1))
    dep_hash = dependency_hash({lock: (src / lock).read_bytes()})
    log = io.StringIO()
    with pytest.raises(LockFileError) as failed:
        build_environment(
            envs_dir=tmp_path / "envs", dep_hash=dep_hash, tag="t", source_dir=src,
            settings=BuilderSettings(build_timeout_s=300, uv_cache_dir=uv_cache), log=log,
            project="alice", sandbox=sandbox,
        )  # fmt: skip
    message = str(failed.value)
    assert expected in message
    assert "line" in message
    assert "wheels alone do not make" not in log.getvalue()  # no second try in the project's
    assert find_environment(tmp_path / "envs", dep_hash) is None


def test_a_poetry_1_lock_is_refused_with_the_way_out(tmp_path: Path, uv_cache: Path) -> None:
    src, dep_hash = _source(tmp_path / "src", "poetry-1.8")
    with pytest.raises(LockFileError, match=r"lock-version 2\.0 .*run `poetry lock` with Poetry 2"):
        _build(tmp_path, src, dep_hash, uv_cache, None)
