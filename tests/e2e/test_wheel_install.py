"""The platform image's install, outside the image: deploy/Dockerfile's own pip commands build
Nakama's wheel from a fresh clone of HEAD and install it (not editable) into a virtual
environment; ``nakama up`` from there, started outside the clone with a clean environment,
answers /healthz, serves the web UI's sign-in page with its static files, and a project made
there, by alice and by bob, starts from the starter kit (its hidden ``.streamlit/`` too).

Before, the wheel held no templates, static files, ``script.py.mako`` or starter kit, and
``nakama up`` stopped in create_app: "Directory '.../backend/web/static' does not exist".
Installing takes about a minute (from the package index, with the cluster and postgres extras
as the image has them)."""

from __future__ import annotations

import re
import shlex
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.installed import clean_env, clone_head, imported_from, make_venv, run, serving
from tests.e2e.nakama_server import wait_for
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ADMIN_TOKEN = "wheel-test-admin-token-0123456789abcdef"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
# What the wheel must carry besides the modules: every file git has in these places.
DATA_PATHS = ("backend/web/templates", "backend/web/static", "app_starter_kit")
DATA_FILES = ("nakama/db/migrations/script.py.mako",)


def dockerfile_pip_commands(dockerfile: Path) -> list[str]:
    """The commands of the Dockerfile's RUN step that installs Nakama, split at ``&&``."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    runs = [
        line.strip().removeprefix("RUN ").strip()
        for line in joined.splitlines()
        if line.strip().startswith("RUN ") and "pip " in line
    ]
    assert len(runs) == 1, runs
    return [" ".join(part.split()) for part in runs[0].split("&&")]


@dataclass
class Installed:
    clone: Path
    venv: Path
    wheel: Path
    home: Path
    outside: Path  # a folder outside the clone to run from


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    home, outside = root / "home", root / "elsewhere"
    home.mkdir()
    outside.mkdir()
    clone = clone_head(root / "nakama")
    venv = make_venv(root / "venv", home=home)
    wheels = root / "wheels"
    commands = dockerfile_pip_commands(clone / "deploy" / "Dockerfile")
    assert commands == [
        "pip wheel --no-deps -w /tmp/wheels /src",
        'pip install "$(ls /tmp/wheels/nakama-*.whl)[cluster,postgres]"',
        "rm -rf /src /tmp/wheels",
    ], commands
    for command in commands[:2]:  # the image's own commands, on this clone and this venv
        here = command.replace("/tmp/wheels", shlex.quote(str(wheels)))
        here = here.replace("/src", shlex.quote(str(clone)))
        done = run(["/bin/sh", "-c", here], cwd=outside, env=clean_env(home, venv=venv))
        assert done.returncode == 0, f"{here}: {done.stdout[-2000:]} {done.stderr[-3000:]}"
    (wheel,) = wheels.glob("nakama-*.whl")
    return Installed(clone=clone, venv=venv, wheel=wheel, home=home, outside=outside)


def test_the_wheel_holds_every_template_static_file_migration_and_the_starter_kit(
    installed: Installed,
) -> None:
    tracked = run(
        ["git", "ls-files", *DATA_PATHS, *DATA_FILES],
        cwd=installed.clone,
        env=clean_env(installed.home),
    ).stdout.split()
    assert "app_starter_kit/.streamlit/config.toml" in tracked and len(tracked) > 20, tracked
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        missing = [path for path in tracked if path not in names]
        assert not missing, f"not in {installed.wheel.name}: {missing}"
        for path in tracked:
            assert wheel.read(path) == (installed.clone / path).read_bytes(), path
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


@pytest.fixture(scope="module")
def server(installed: Installed) -> Iterator[str]:
    """``nakama up`` of the installed wheel, run from a folder outside the clone."""
    port = free_port()
    data = installed.outside / "data"
    log = installed.outside / "up.log"
    env = clean_env(
        installed.home,
        venv=installed.venv,
        NAKAMA_ADMIN_TOKEN=ADMIN_TOKEN,
        # No downloads for the first builds the projects start: this test is about the files.
        UV_OFFLINE="1",
    )
    try:
        with serving(
            str(installed.venv / "bin" / "nakama"),
            data=data, port=port, cwd=installed.outside, env=env, log=log,
        ) as url:  # fmt: skip
            yield url
    finally:
        subprocess.run(["pkill", "-KILL", "-f", str(data / "apps")], check=False)


def test_nakama_runs_from_the_installed_package_not_the_clone(installed: Installed) -> None:
    for module in ("nakama", "backend", "app_starter_kit"):
        where = imported_from(installed.venv, module, cwd=installed.outside, home=installed.home)
        assert where.startswith(str(installed.venv / "lib")), (module, where)


def test_up_serves_the_sign_in_page_with_its_static_files(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        page = http.get("/login")
        assert page.status_code == 200, page.text[:500]
        assert "<h1>Sign in</h1>" in page.text and 'name="csrf_token"' in page.text
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert {"/static/nakama.css", "/static/nakama.js"} <= set(assets), assets
        for asset in assets:
            r = http.get(asset)
            assert r.status_code == 200 and r.content, asset
        assert "text/css" in http.get("/static/nakama.css").headers["content-type"]
        assert http.get("/docs").status_code == 200


def pushed_to(server: str, clone: Path, *, username: str, token: str, home: Path) -> None:
    """A push to the project: the installed package's post-receive hook says what it will do
    and its hook reaches the receiver (a pipeline for the commit)."""
    (clone / "app.py").write_text((clone / "app.py").read_text() + "\n# changed\n")
    email = f"{username}@example.org"
    env = clean_env(home, GIT_AUTHOR_NAME=username, GIT_AUTHOR_EMAIL=email,
                    GIT_COMMITTER_NAME=username, GIT_COMMITTER_EMAIL=email)  # fmt: skip
    assert run(["git", "commit", "-qam", "a change"], cwd=clone, env=env).returncode == 0
    commit = run(["git", "rev-parse", "HEAD"], cwd=clone, env=env).stdout.strip()
    done = run(["git", "push", "-q", "origin", "HEAD:main"], cwd=clone, env=env)
    assert done.returncode == 0, done.stderr
    assert f"nakama: push to main received ({commit[:8]})" in done.stderr, done.stderr
    auth = {"Authorization": f"Bearer {token}"}

    def pipeline() -> bool:
        url = f"{server}/api/v1/projects/{username}-kit/pipelines"
        return any(p["commit"] == commit for p in httpx.get(url, headers=auth, timeout=30).json())

    wait_for(pipeline, timeout=60, what=f"a pipeline for {username}'s push")


def signed_in(server: str, username: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=server, timeout=30, follow_redirects=False)
    page = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    r = browser.post(
        "/login", data={"username": username, "password": password, "csrf_token": csrf[1]}
    )
    assert r.status_code == 303, r.text[:500]
    return browser


def test_projects_start_from_the_installed_starter_kit(
    installed: Installed, server: str, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tokens = {}
    for username, password in PASSWORDS.items():
        r = httpx.post(
            f"{server}/api/v1/users",
            json={"username": username, "password": password},
            headers=admin,
            timeout=30,
        )
        assert r.status_code == 201, r.text
        tokens[username] = r.json()["token"]
    kit = installed.clone / "app_starter_kit"
    expected = {
        path: (kit / path).read_bytes()
        for path in run(["git", "ls-files"], cwd=kit, env=clean_env(installed.home)).stdout.split()
    }
    assert {"app.py", ".streamlit/config.toml", "requirements.txt"} <= set(expected)
    for username, token in tokens.items():
        r = httpx.post(
            f"{server}/api/v1/projects",
            json={"name": f"{username}-kit"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        clone_url = r.json()["clone_url"].replace("http://", f"http://{username}:{token}@")
        dest = tmp_path / username
        done = run(
            ["git", "clone", "-q", clone_url, str(dest)],
            cwd=tmp_path,
            env=clean_env(installed.home),
        )
        assert done.returncode == 0, done.stderr
        files = run(["git", "ls-files"], cwd=dest, env=clean_env(installed.home)).stdout.split()
        assert {f: (dest / f).read_bytes() for f in files} == expected
        pushed_to(server, dest, username=username, token=token, home=installed.home)
    # Each sees their own project on the web UI's pages (templates), not the other's.
    for username, other in (("alice", "bob"), ("bob", "alice")):
        browser = signed_in(server, username, PASSWORDS[username])
        try:
            page = browser.get("/projects")
            assert page.status_code == 200
            assert f"{username}-kit" in page.text and f"{other}-kit" not in page.text
            assert browser.get(f"/projects/{other}-kit").status_code == 404
        finally:
            browser.close()
        theirs = f"{server}/git/{other}-kit.git".replace(
            "http://", f"http://{username}:{tokens[username]}@"
        )
        denied = run(["git", "ls-remote", theirs], cwd=tmp_path, env=clean_env(installed.home))
        assert denied.returncode != 0, f"{username} read {other}'s repository"
