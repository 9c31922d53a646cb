"""``pip install nakama`` without extras: every command's help works, local mode runs, and a
command that needs the cluster extra's libraries (python-gitlab, kubernetes, authlib,
jsonschema, kubernetes-validate) or the postgres one's says which extra to install, with exit
code 2 and no traceback. Before, ``nakama flux render``, ``nakama reload restart`` and ``nakama
up`` in cluster mode ended in a ModuleNotFoundError traceback.

A fresh clone of HEAD is installed (``pip install <clone>``, its base dependencies only) into a
virtual environment made from the Python running the tests: about half a minute."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
import pytest

from nakama_cli.main import EXTRA_MODULES
from tests.e2e.installed import (
    CLUSTER_MODULES,
    clean_env,
    clone_head,
    make_venv,
    missing_modules,
    run,
    serving,
)
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "base-install-admin-token-0123456789abcdef"
CLUSTER_HINT = "pip install 'nakama[cluster]'"
POSTGRES_HINT = "pip install 'nakama[postgres]'"
# Every command and group of the installed CLI, with its path, as JSON.
LIST_COMMANDS = """
import json, typer.main, nakama_cli.main
def walk(cmd, path):
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from walk(sub, [*path, name])
print(json.dumps(list(walk(typer.main.get_command(nakama_cli.main.app), []))))
"""


def test_the_cli_knows_the_modules_of_every_extra() -> None:
    """nakama_cli.main.EXTRA_MODULES names the top-level modules of each distribution of the
    cluster and postgres extras (read from pyproject.toml; the modules from this environment,
    which has them all)."""
    with (REPO / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    modules_of: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    for extra in ("cluster", "postgres"):
        for requirement in extras[extra]:
            dist = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement)[0]).lower()
            modules = {m for m in modules_of[dist] if not m.startswith("_")}
            assert modules, dist
            for module in modules:
                assert EXTRA_MODULES.get(module) == extra, (extra, dist, module)
    assert set(CLUSTER_MODULES) == {m for m, e in EXTRA_MODULES.items() if e == "cluster"}


@dataclass
class Base:
    venv: Path
    home: Path
    work: Path  # outside the clone

    @property
    def nakama(self) -> str:
        return str(self.venv / "bin" / "nakama")

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            self.home, venv=self.venv, NAKAMA_CONFIG_DIR=str(self.home / "cfg"), **extra
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run([self.nakama, *args], cwd=self.work, env=self.env(**env), timeout=120)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("base")
    home, work = root / "home", root / "work"
    home.mkdir()
    work.mkdir()
    clone = clone_head(root / "nakama")
    venv = make_venv(root / "venv", home=home)
    done = run(
        [str(venv / "bin" / "pip"), "install", str(clone)],
        cwd=work,
        env=clean_env(home, venv=venv),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    absent = missing_modules(venv, (*CLUSTER_MODULES, "psycopg"), home=home)
    assert absent == [*CLUSTER_MODULES, "psycopg"], "a base install has none of the extras"
    return Base(venv=venv, home=home, work=work)


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    both = done.stdout + done.stderr
    assert "Traceback" not in both and "ModuleNotFoundError" not in both, both[-3000:]


def test_every_commands_help_works(base: Base) -> None:
    listed = run(
        [str(base.venv / "bin" / "python"), "-c", LIST_COMMANDS], cwd=base.work, env=base.env()
    )
    assert listed.returncode == 0, listed.stderr
    paths = json.loads(listed.stdout)
    assert ["flux", "render"] in paths and ["cluster", "setup"] in paths and ["up"] in paths
    assert len(paths) > 40, paths
    for path in paths:
        done = base.run(*path, "--help")
        no_traceback(done)
        if done.returncode == 2 and CLUSTER_HINT in done.stderr:
            continue  # a command whose own parser gives its help: it needs the cluster extra
        assert done.returncode == 0, (path, done.stderr[-2000:])
        assert "usage:" in done.stdout.lower(), (path, done.stdout[-500:])


@pytest.mark.parametrize(
    "args",
    [
        ["flux", "render", "--project", "alice-app", "--out", "out"],
        ["flux", "render", "--gateway", "--out", "out"],
        ["flux", "validate", "manifest.yaml"],
        ["reload", "restart", "--project", "alice-app", "--commit", "a" * 40],
    ],
    ids=" ".join,
)
def test_a_cluster_command_names_the_extra_to_install(base: Base, args: list[str]) -> None:
    (base.work / "manifest.yaml").write_text("apiVersion: v1\nkind: Namespace\n")
    done = base.run(*args)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert CLUSTER_HINT in done.stderr, done.stderr
    no_traceback(done)
    assert not (base.work / "out").exists(), "nothing is written"


def test_commands_that_need_no_extra_still_run(base: Base) -> None:
    """cluster setup and build talk to Harbor and registries over httpx: they run (and stop
    on their own checks), not on an import."""
    done = base.run("cluster", "setup")
    assert done.returncode == 2 and "NAKAMA_HARBOR__PASSWORD is not set" in done.stderr
    no_traceback(done)
    done = base.run("build")
    assert done.returncode == 2 and "--repo" in done.stderr
    no_traceback(done)


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({"NAKAMA_MODE": "cluster"}, CLUSTER_HINT),
        ({"NAKAMA_DATABASE_URL": "postgresql+psycopg://nakama@127.0.0.1:1/nakama"}, POSTGRES_HINT),
    ],
    ids=["cluster mode", "PostgreSQL"],
)
def test_up_without_the_extra_says_which_to_install_and_frees_its_port(
    base: Base, tmp_path: Path, env: dict[str, str], hint: str
) -> None:
    port = free_port()
    data = tmp_path / "data"
    done = base.run("up", "--data-dir", str(data), "--port", str(port), **env)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert hint in done.stderr, done.stderr[-2000:]
    no_traceback(done)
    with httpx.Client(timeout=2) as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/healthz")
    # The data dir's lock went with it: local mode starts on the same data dir and port.
    with up(base, data, port) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"


@contextmanager
def up(base: Base, data: Path, port: int) -> Iterator[str]:
    """Local mode's ``nakama up`` of the base install, from /healthz answering to its stop."""
    with serving(
        base.nakama,
        data=data,
        port=port,
        cwd=base.work,
        env=base.env(NAKAMA_ADMIN_TOKEN=ADMIN_TOKEN, UV_OFFLINE="1"),
        log=data.parent / f"up-{port}.log",
    ) as url:
        yield url


@pytest.fixture
def local(base: Base, tmp_path: Path) -> Iterator[str]:
    with up(base, tmp_path / "data", free_port()) as url:
        yield url


def test_local_mode_runs_on_a_base_install_for_two_users(local: str) -> None:
    """The web UI and the API of a base install, alice and bob each with a project."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tokens = {}
    for name in ("alice", "bob"):
        r = httpx.post(f"{local}/api/v1/users", json={"username": name}, headers=admin, timeout=30)
        assert r.status_code == 201, r.text
        tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        r = httpx.post(
            f"{local}/api/v1/projects",
            json={"name": f"{name}-app"},
            headers=tokens[name],
            timeout=30,
        )
        assert r.status_code == 201, r.text
    for name, other in (("alice", "bob"), ("bob", "alice")):
        mine = httpx.get(f"{local}/api/v1/projects", headers=tokens[name], timeout=30).json()
        assert [p["name"] for p in mine] == [f"{name}-app"]
        r = httpx.get(f"{local}/api/v1/projects/{other}-app", headers=tokens[name], timeout=30)
        assert r.status_code == 404
    assert httpx.get(f"{local}/login", timeout=30).status_code == 200
