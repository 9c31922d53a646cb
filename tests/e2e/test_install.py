"""The README's first commands on a fresh clone: ``./scripts/up`` installs Nakama into a virtual
environment and runs it, with nothing but the system's Python (which, on current Debian and
Ubuntu, refuses ``pip install`` outside a virtual environment: PEP 668), or into the virtual
environment already active; ``./scripts/test`` runs pytest with the test tools installed.

Each case clones this repository's HEAD and installs from the package index (about a minute)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.installed import clean_env, clone_head, run
from tests.e2e.nakama_server import wait_for
from tests.support import free_port

SYSTEM_PYTHON = Path("/usr/bin/python3")
ADMIN_TOKEN = "install-test-admin-token-0123456789abcdef"
# A small unit test module with no fixtures of its own.
SMALL_TESTS = "tests/unit/test_tagging.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def system_python_with_venv() -> None:
    """Skip unless /usr/bin/python3 can make virtual environments (Debian: python3-venv)."""
    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} is missing: no system Python to install with")
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no venv/ensurepip module (apt-get install python3-venv)")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One HOME for the module's runs: pip's cache is shared between them."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of the HEAD of the repository these tests run in."""
    return clone_head(tmp_path / "nakama")


def test_scripts_up_installs_and_runs_with_the_system_python_and_deploys(
    clone: Path, home: Path, tmp_path: Path
) -> None:
    system_python_with_venv()
    port = free_port()
    output = tmp_path / "up.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            ["./scripts/up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=clone,
            env=clean_env(home, NAKAMA_ADMIN_TOKEN=ADMIN_TOKEN),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"scripts/up exited {proc.returncode}: {output.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    api = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )

    def deployed() -> dict[str, object] | None:
        pipelines = api.get("/projects/first-app/pipelines").json()
        failed = [p for p in pipelines if p["status"] == "failed"]
        if failed:
            raise AssertionError(f"the first deploy failed: {failed[0]['error']}")
        project = api.get("/projects/first-app").json()
        return project if project["status"] == "running" else None

    try:
        wait_for(healthy, timeout=900, interval=0.5, what="scripts/up to install and answer")
        # The starter kit is built and runs on this Python too (its environment, its sandbox).
        assert api.post("/projects", json={"name": "first-app"}).status_code == 201
        project = wait_for(deployed, timeout=600, interval=0.5, what="the starter kit to run")
        assert project["deployed_commit"]
    finally:
        api.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = output.read_text()
    assert f"Nakama http://127.0.0.1:{port}" in text
    venv = clone / ".venv"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin" / "nakama").is_file()
    # A second run finds it installed (pyproject.toml unchanged) and goes straight to nakama.
    again = run(["./scripts/up", "--help"], cwd=clone, env=clean_env(home))
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr and "Usage: nakama up" in again.stdout


def test_scripts_up_installs_into_the_active_virtual_environment(
    clone: Path, home: Path, tmp_path: Path
) -> None:
    system_python_with_venv()
    env_dir = tmp_path / "env"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(env_dir)], check=True)
    active = clean_env(home, venv=env_dir, VIRTUAL_ENV=str(env_dir))
    done = run(["./scripts/up", "--help"], cwd=clone, env=active)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"into {env_dir}" in done.stderr
    assert not (clone / ".venv").exists(), "no second environment next to the active one"
    where = run(
        [str(env_dir / "bin" / "python"), "-c", "import nakama; print(nakama.__file__)"],
        cwd=env_dir,  # not next to the clone, whose directory would shadow the package
        env=active,
    )
    assert where.stdout.strip() == str(clone / "nakama" / "__init__.py"), where.stderr
    assert (env_dir / "bin" / "nakama").is_file()


def test_scripts_test_runs_pytest_in_a_fresh_clone(clone: Path, home: Path) -> None:
    system_python_with_venv()
    done = run(
        ["./scripts/test", "--collect-only", "-q", SMALL_TESTS], cwd=clone, env=clean_env(home)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SMALL_TESTS}::" in done.stdout
    assert "tests collected" in done.stdout or "test collected" in done.stdout
    # The test tools went into the clone's environment, not the system's Python.
    assert (clone / ".venv" / "bin" / "pytest").is_file()
    assert os.access(clone / ".venv" / "bin" / "ruff", os.X_OK)
