"""image_builder.environments with the real uv against PyPI (tiny pure-Python packages only)."""

from __future__ import annotations

import fcntl
import io
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from image_builder.environments import (
    build_environment,
    clean_partial_builds,
    find_environment,
    list_environments,
    remove_environment,
)
from nakama.errors import PermanentError
from nakama.settings import BuilderSettings
from nakama.tagging import dependency_hash

REQUIREMENTS = "six==1.16.0\npyflakes==3.2.0\n"


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the session: only the first build downloads."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def settings(uv_cache: Path) -> BuilderSettings:
    return BuilderSettings(uv_cache_dir=uv_cache, build_timeout_s=300.0)


def _source(base: Path, files: dict[str, str]) -> tuple[Path, str]:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)
    return base, dependency_hash({name: text.encode() for name, text in files.items()})


def _run(python: Path, code: str) -> str:
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _leftovers(envs: Path) -> list[str]:
    return sorted(p.name for p in envs.iterdir() if p.name.startswith(".tmp-"))


def test_build_from_requirements_gives_a_working_relocated_env(
    tmp_path: Path, settings: BuilderSettings
) -> None:
    envs = tmp_path / "envs"
    src, dep_hash = _source(tmp_path / "src", {"requirements.txt": REQUIREMENTS})
    log = io.StringIO()
    env, built = build_environment(
        envs_dir=envs, dep_hash=dep_hash, tag="main-0123abcd-20250101000000",
        source_dir=src, settings=settings, log=log,
    )  # fmt: skip
    assert built
    assert env.path == envs / dep_hash and env.python == envs / dep_hash / "bin" / "python"
    assert _run(env.python, "import six; print(six.__version__)") == "1.16.0"
    # The venv was built under .tmp-…: its scripts must still run after the rename.
    script = env.path / "bin" / "pyflakes"
    assert ".tmp-" not in script.read_text()
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("3.2.0")
    assert "six==1.16.0" in log.getvalue()
    assert find_environment(envs, dep_hash) == env
    assert list_environments(envs) == [env]
    assert _leftovers(envs) == []

    started = time.perf_counter()
    again, built_again = build_environment(
        envs_dir=envs, dep_hash=dep_hash, tag="main-ffffffff-20250102000000",
        source_dir=src, settings=settings, log=io.StringIO(),
    )  # fmt: skip
    assert not built_again
    assert again == env  # the first tag stays: the build is the same
    assert time.perf_counter() - started < 0.1


def test_a_bad_requirement_fails_cleanly(tmp_path: Path, settings: BuilderSettings) -> None:
    envs = tmp_path / "envs"
    src, dep_hash = _source(
        tmp_path / "src", {"requirements.txt": "this-package-does-not-exist-nakama==0.0.1\n"}
    )
    with pytest.raises(PermanentError) as failed:
        build_environment(
            envs_dir=envs, dep_hash=dep_hash, tag="t", source_dir=src, settings=settings,
            log=io.StringIO(),
        )  # fmt: skip
    assert "this-package-does-not-exist-nakama" in str(failed.value)
    assert "uv pip install failed" in str(failed.value)
    assert find_environment(envs, dep_hash) is None
    assert not (envs / dep_hash).exists()
    assert _leftovers(envs) == []


def test_index_credentials_never_reach_the_error_or_log(
    tmp_path: Path, settings: BuilderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    envs = tmp_path / "envs"
    requirements = "--index-url http://builder:hunter2@127.0.0.1:9/simple\nsix==1.16.0\n"
    src, dep_hash = _source(tmp_path / "src", {"requirements.txt": requirements})
    log = io.StringIO()
    with pytest.raises(PermanentError) as failed:
        build_environment(
            envs_dir=envs, dep_hash=dep_hash, tag="t", source_dir=src, settings=settings, log=log
        )
    assert "hunter2" not in str(failed.value)
    assert "hunter2" not in log.getvalue()


def test_the_build_timeout_kills_uv(tmp_path: Path, uv_cache: Path) -> None:
    envs = tmp_path / "envs"
    with socket.socket() as index:  # accepts connections, never answers: uv would wait
        index.bind(("127.0.0.1", 0))
        index.listen()
        url = f"http://127.0.0.1:{index.getsockname()[1]}/simple"
        src, dep_hash = _source(tmp_path / "src", {"requirements.txt": f"-i {url}\nsix\n"})
        settings = BuilderSettings(uv_cache_dir=uv_cache, build_timeout_s=1.0)
        log = io.StringIO()
        started = time.perf_counter()
        with pytest.raises(PermanentError, match="timed out after 1s"):
            build_environment(
                envs_dir=envs, dep_hash=dep_hash, tag="t", source_dir=src, settings=settings,
                log=log,
            )  # fmt: skip
        assert time.perf_counter() - started < 5
    assert "Creating virtual environment" in log.getvalue()  # streamed before the kill
    assert find_environment(envs, dep_hash) is None
    assert _leftovers(envs) == []


def test_two_concurrent_builds_of_one_hash_build_once(
    tmp_path: Path, settings: BuilderSettings
) -> None:
    envs = tmp_path / "envs"
    src, dep_hash = _source(tmp_path / "src", {"requirements.txt": "six==1.16.0\n"})
    start = threading.Barrier(2)
    results: list[bool] = []
    errors: list[BaseException] = []

    def build() -> None:
        start.wait()
        try:
            _, built = build_environment(
                envs_dir=envs, dep_hash=dep_hash, tag="t", source_dir=src, settings=settings,
                log=io.StringIO(),
            )  # fmt: skip
            results.append(built)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [False, True]
    assert _leftovers(envs) == []


def test_an_env_without_dependency_files_builds(tmp_path: Path, settings: BuilderSettings) -> None:
    envs = tmp_path / "envs"
    src, _ = _source(tmp_path / "src", {"app.py": "print('hi')\n", "packages.txt": "libpq5\n"})
    log = io.StringIO()
    env, built = build_environment(
        envs_dir=envs, dep_hash="0" * 16, tag="t", source_dir=src, settings=settings, log=log
    )
    assert built
    assert _run(env.python, "import sys; print(sys.prefix)") == str(env.path)
    assert "packages.txt" in log.getvalue() and "nothing to install" in log.getvalue()


def test_pyproject_dependencies_are_installed_with_relative_paths(
    tmp_path: Path, settings: BuilderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pyproject = '[project]\nname = "app"\nversion = "0"\ndependencies = ["six==1.16.0"]\n'
    _, dep_hash = _source(tmp_path / "src", {"pyproject.toml": pyproject})
    env, _ = build_environment(
        envs_dir=Path("envs"), dep_hash=dep_hash, tag="t", source_dir=Path("src"),
        settings=settings, log=io.StringIO(),
    )  # fmt: skip
    assert _run(env.python, "import six; print(six.__version__)") == "1.16.0"
    assert find_environment(Path("envs"), dep_hash) is not None


def test_clean_partial_builds_spares_running_builds(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    (envs / ".tmp-aaaa-1234" / "bin").mkdir(parents=True)
    (envs / ".tmp-bbbb-5678").mkdir()
    (envs / ".locks").mkdir()
    with open(envs / ".locks" / "bbbb.lock", "w") as held:  # a build of bbbb is running
        fcntl.flock(held, fcntl.LOCK_EX)
        assert clean_partial_builds(envs) == 1
    assert _leftovers(envs) == [".tmp-bbbb-5678"]
    assert clean_partial_builds(envs) == 1
    assert _leftovers(envs) == []
    assert clean_partial_builds(tmp_path / "absent") == 0


def test_remove_environment_is_idempotent(tmp_path: Path, settings: BuilderSettings) -> None:
    envs = tmp_path / "envs"
    src, _ = _source(tmp_path / "src", {"app.py": ""})
    env, _ = build_environment(
        envs_dir=envs, dep_hash="1" * 16, tag="t", source_dir=src, settings=settings,
        log=io.StringIO(),
    )  # fmt: skip
    remove_environment(envs, env.dep_hash)
    remove_environment(envs, env.dep_hash)
    assert find_environment(envs, env.dep_hash) is None
    assert not os.path.lexists(env.path)
    assert list_environments(envs) == []
