"""Importing an existing git repository through a real ``nakama up``: from a public and a private
repository served by ``git http-backend`` on 127.0.0.1, the detection of the main file and the
Python version, the first deploy and later pushes, a token kept nowhere, and refusals that leave
no project behind. alice imports; bob, another user, sees none of it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, create_engine, select

from tests.e2e.nakama_server import (
    NakamaProcess,
    fetch_text,
    git,
    running,
    wait_for,
)
from tests.git_http_source import GitSource, serving

TOKEN = "glpat-src-Zq8vY2mK4pLxR7wT"  # the private source's token
WRONG = "glpat-wrong-0000000000000"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # the server's: local builds use it

# Stands in for Streamlit, which would come from the package index: ``python -m streamlit run
# <script> --server.port P ...`` (the command Nakama runs for a main file) finds this package in
# the app's directory first and runs the script with $PORT set, as Streamlit would serve it.
STREAMLIT_SHIM = """\
import os, runpy, sys

args = sys.argv[1:]
assert args[0] == "run", args
os.environ["PORT"] = args[args.index("--server.port") + 1]
sys.argv = [args[1]]
runpy.run_path(args[1], run_name="__main__")
"""
APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "{version}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{{VERSION}} from {{__file__.rsplit('/', 1)[-1]}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def app_files(version: str = "imported v1", *, main: str = "streamlit_app.py") -> dict[str, str]:
    return {
        main: APP.format(version=version),
        "streamlit/__init__.py": "",
        "streamlit/__main__.py": STREAMLIT_SHIM,
        ".python-version": f"{PYTHON}\n",
        "README.md": "# A dashboard that lived elsewhere\n",
    }


# A push restarts the app: the shim above cannot rerun a changed script in place as Streamlit
# does with the live strategy.
BUILDER = {"NAKAMA_RUNTIME__RELOAD_STRATEGY": "restart"}


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    """Nakama on SQLite."""
    with running(
        tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache, extra_env=BUILDER
    ) as server:
        yield server


@pytest.fixture
def nakama_on_each_database(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path, database_url: str
) -> Iterator[NakamaProcess]:
    """Nakama on SQLite, then on PostgreSQL."""
    with running(
        tmp_path / "data",
        starter_kit=tiny_kit,
        uv_cache=uv_cache,
        extra_env={"NAKAMA_DATABASE_URL": database_url, **BUILDER},
    ) as server:
        yield server


@pytest.fixture
def public(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "public-src") as source:
        source.create("dashboard", app_files())
        yield source


@pytest.fixture
def private(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "private-src", username="reader", password=TOKEN) as source:
        source.create("secret-dashboard", app_files("private v1"))
        yield source


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def user_api(nakama: NakamaProcess, username: str) -> httpx.Client:
    """A new user's API client (closed after the test)."""
    r = nakama.api.post("/api/v1/users", json={"username": username})
    assert r.status_code in (200, 201), r.text
    client = httpx.Client(
        base_url=nakama.url, timeout=60, headers={"Authorization": f"Bearer {r.json()['token']}"}
    )
    _CLIENTS.append(client)
    return client


def create(api: httpx.Client, name: str, **source: Any) -> httpx.Response:
    return api.post("/api/v1/projects", json={"name": name, "source": source}, timeout=120)


def wait_live(nakama: NakamaProcess, api: httpx.Client, name: str, commit: str) -> str:
    """The app's answer once ``commit`` is deployed (read with ``api``'s token)."""
    nakama.wait_deployed(name, commit, timeout=180)
    app_url = nakama.project(name)["app_url"]
    token = api.headers["Authorization"].removeprefix("Bearer ")
    return str(wait_for(lambda: fetch_text(app_url, token=token), timeout=60, what="the app"))


def nothing_left(nakama: NakamaProcess, name: str) -> None:
    assert nakama.api.get(f"/api/v1/projects/{name}").status_code == 404
    assert name not in [p["name"] for p in nakama.api.get("/api/v1/projects").json()]
    assert not (nakama.data_dir / "git" / f"{name}.git").exists()
    assert not [p for p in (nakama.data_dir / "git").iterdir() if name in p.name]


def test_public_import_detects_and_deploys_then_pushes_deploy(
    nakama: NakamaProcess, public: GitSource, tmp_path: Path
) -> None:
    alice = user_api(nakama, "alice")
    r = create(alice, "dashboard", url=public.repo_url("dashboard"))
    assert r.status_code == 201, r.text
    body = r.json()
    detected = body["detected"]
    head = git("--git-dir", str(public.root / "dashboard.git"), "rev-parse", "main", cwd=tmp_path)
    assert detected["commit"] == head
    assert (detected["branch"], detected["main_file"]) == ("main", "streamlit_app.py")
    assert detected["python_version"] == PYTHON
    assert detected["from"] == {
        "branch": "the source's default branch (its HEAD)",
        "main_file": "found at the root",
        "python_version": detected["from"]["python_version"],
    }
    assert detected["from"]["python_version"].startswith("from .python-version")
    assert "main file: streamlit_app.py (found at the root)" in detected["summary"]
    assert body["role"] == "owner" and body["status"] == "building"

    # The first deploy is the imported head, planned as a push's first build is.
    first = nakama.pipelines("dashboard")
    assert [(p["kind"], p["commit"]) for p in first] == [("build", head)]
    assert "imported main" in first[0]["reason"]
    assert wait_live(nakama, alice, "dashboard", head) == "imported v1 from streamlit_app.py"

    # The project's repository goes on like any other: a push of a code change is live.
    clone_url = nakama.project("dashboard")["clone_url"]
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    work = tmp_path / "work"
    git("clone", "-q", clone_url.replace("http://", f"http://alice:{token}@"), str(work),
        cwd=tmp_path)  # fmt: skip
    (work / "streamlit_app.py").write_text(APP.format(version="pushed v2"))
    git("commit", "-qam", "v2", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    sha2 = git("rev-parse", "HEAD", cwd=work)
    assert wait_live(nakama, alice, "dashboard", sha2) == "pushed v2 from streamlit_app.py"
    assert git("log", "--format=%H", "-2", cwd=work).split() == [sha2, head]

    # bob sees nothing of it, not even that it exists.
    bob = user_api(nakama, "bob")
    assert bob.get("/api/v1/projects").json() == []
    assert bob.get("/api/v1/projects/dashboard").status_code == 404
    assert create(bob, "dashboard", url=public.repo_url("dashboard")).status_code == 409


def test_private_import_keeps_the_token_nowhere(
    nakama_on_each_database: NakamaProcess, private: GitSource, database_url: str
) -> None:
    nakama = nakama_on_each_database
    alice = user_api(nakama, "alice")
    url = private.repo_url("secret-dashboard")

    # Without the token, with a wrong one: clear refusals, nothing made, the name stays free.
    r = create(alice, "secret-dashboard", url=url)
    assert r.status_code == 422, r.text
    assert "needs credentials" in r.json()["detail"]
    nothing_left(nakama, "secret-dashboard")
    r = create(alice, "secret-dashboard", url=url, token=WRONG, username="reader")
    assert r.status_code == 422, r.text
    assert "refused the token" in r.json()["detail"] and WRONG not in r.text
    nothing_left(nakama, "secret-dashboard")

    r = create(alice, "secret-dashboard", url=url, token=TOKEN, username="reader")
    assert r.status_code == 201, r.text
    assert TOKEN not in r.text
    detected = r.json()["detected"]
    assert detected["url"] == url and detected["main_file"] == "streamlit_app.py"
    assert wait_live(nakama, alice, "secret-dashboard", detected["commit"]) == (
        "private v1 from streamlit_app.py"
    )
    assert {req.user for req in private.requests if req.status == 200} == {"reader"}

    # The token is nowhere: not in the data dir (the repository and its config, logs, the
    # SQLite file), not in any row of the database, not in Nakama's log, not in the source's.
    forms = [TOKEN, base64.b64encode(f"reader:{TOKEN}".encode()).decode(), WRONG]
    repo_config = (nakama.data_dir / "git" / "secret-dashboard.git" / "config").read_text()
    assert url not in repo_config
    for path in nakama.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for form in forms:
                assert form.encode() not in data, path
    engine = create_engine(database_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            dump = "\n".join(
                repr(tuple(row))
                for table in meta.sorted_tables
                for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()
    assert "secret-dashboard" in dump and url in dump
    assert not [form for form in forms if form in dump]
    server_log = nakama.log_path.read_text(errors="replace")
    assert "project imported" in server_log
    assert not [form for form in forms if form in server_log]
    assert not [form for form in forms for line in private.log_lines if form in line]

    # bob neither sees the project nor gets at the source through it: without the token,
    # Nakama has none to lend him.
    bob = user_api(nakama, "bob")
    assert bob.get("/api/v1/projects/secret-dashboard").status_code == 404
    assert "secret-dashboard" not in bob.get("/api/v1/projects").text
    r = create(bob, "bobs-copy", url=url)
    assert r.status_code == 422 and "needs credentials" in r.json()["detail"]
    nothing_left(nakama, "bobs-copy")


BAD_SOURCES: list[tuple[dict[str, str], int, str]] = [
    ({"url": "http://example.com/acme/dash.git"}, 422, "http:// is allowed only for this"),
    ({"url": "git@github.com:acme/dash.git"}, 422, "SSH URLs"),
    ({"url": "ssh://git@github.com/acme/dash.git"}, 422, "SSH URLs"),
    ({"url": "file:///etc"}, 422, "file:// URLs are not allowed"),
    ({"url": "ext::sh -c touch% /tmp/pwned"}, 422, "spaces"),
    ({"url": "ext::sh"}, 422, "transport helpers"),
    ({"url": "https://reader:hunter22@example.com/dash.git"}, 422, "contains a password"),
    ({"branch": "nope"}, 422, "branch 'nope' is not in the source"),
    ({"main_file": "missing.py"}, 422, "'missing.py' is not in branch 'main'"),
    ({"main_file": "../etc/passwd.py"}, 422, "relative path to a .py file"),
    ({"python_version": "3.2"}, 422, "builds would use Python"),
    ({"repo": "no-main"}, 422, "no main file found"),
    ({"repo": "missing"}, 422, "no git repository at"),
]


def test_bad_sources_are_clear_and_leave_nothing(nakama: NakamaProcess, public: GitSource) -> None:
    public.create("no-main", {"main.py": "print(1)\n"})
    for source, status, says in BAD_SOURCES:
        spec = dict(source)
        repo = spec.pop("repo", "dashboard")
        spec.setdefault("url", public.repo_url(repo))
        r = create(nakama.api, "dash", **spec)
        assert r.status_code == status, (source, r.text)
        assert says in r.json()["detail"], (source, r.text)
        assert "hunter22" not in r.text
        nothing_left(nakama, "dash")
    # The name was free all along: an import that works takes it.
    assert create(nakama.api, "dash", url=public.repo_url("dashboard")).status_code == 201


def test_a_taken_name_is_a_conflict_that_changes_nothing(
    nakama: NakamaProcess, public: GitSource
) -> None:
    r = nakama.api.post("/api/v1/projects", json={"name": "dashboard"})
    assert r.status_code == 201, r.text
    before = nakama.project("dashboard")
    r = create(nakama.api, "dashboard", url=public.repo_url("dashboard"))
    assert r.status_code == 409, r.text
    after = nakama.project("dashboard")
    assert after["clone_url"] == before["clone_url"]
    assert [p["reason"] for p in nakama.pipelines("dashboard")] == [
        "first build of the starter kit"
    ]


def cli(nakama: NakamaProcess, token: str, *args: str, stdin: str | None = None) -> Any:
    """`nakama ARGS` as alice's (or anyone's) command line client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAKAMA_")}
    env |= {"NAKAMA_URL": nakama.url, "NAKAMA_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run(
        [shutil.which("nakama") or "nakama", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_imports_with_the_token_from_stdin(nakama: NakamaProcess, private: GitSource) -> None:
    alice = user_api(nakama, "alice")
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    url = private.repo_url("secret-dashboard")
    args = ["projects", "create", "from-cli", "--from", url, "--username", "reader"]
    wrong = cli(nakama, token, *args, "--token-stdin", "--no-wait", stdin=WRONG + "\n")
    assert wrong.returncode == 6, wrong.stderr
    assert "refused the token" in wrong.stderr and WRONG not in wrong.stderr + wrong.stdout
    nothing_left(nakama, "from-cli")
    misuse = cli(nakama, token, "projects", "create", "from-cli", "--branch", "main")
    assert misuse.returncode == 6 and "--branch go with --from URL" in misuse.stderr

    out = cli(nakama, token, *args, "--token-stdin", "--json", stdin=TOKEN + "\n")
    assert out.returncode == 0, out.stderr
    assert TOKEN not in out.stdout + out.stderr
    created = json.loads(out.stdout)
    assert created["status"] == "running"
    assert created["detected"]["main_file"] == "streamlit_app.py"
    assert fetch_text(created["app_url"], token=token) == "private v1 from streamlit_app.py"
    shown = cli(nakama, token, "projects", "create", "from-cli-2", "--from", url, "--username",
                "reader", "--token-stdin", "--no-wait", stdin=TOKEN + "\n")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "main file: streamlit_app.py (found at the root)" in shown.stderr
    assert "branch: main (the source's default branch (its HEAD))" in shown.stderr


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A signed-in web session: an httpx client with a cookie jar, filling in forms."""

    def __init__(self, nakama: NakamaProcess, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=nakama.url, timeout=120, follow_redirects=False)
        _CLIENTS.append(self.http)
        page = self.http.get("/login")
        r = self.http.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": self.csrf(page.text)},
        )
        assert r.status_code == 303, r.text

    @staticmethod
    def csrf(html: str) -> str:
        found = _CSRF.search(html)
        assert found, "no CSRF field on the page"
        return found.group(1)

    def create(self, **fields: str) -> httpx.Response:
        page = self.http.get("/projects")
        return self.http.post("/projects", data={"csrf_token": self.csrf(page.text), **fields})


def test_web_form_imports_and_never_shows_the_token(
    nakama: NakamaProcess, private: GitSource
) -> None:
    for username in ("alice", "bob"):
        r = nakama.api.post(
            "/api/v1/users", json={"username": username, "password": f"{username}-password-1"}
        )
        assert r.status_code == 201, r.text
    alice = Browser(nakama, "alice", "alice-password-1")
    page = alice.http.get("/projects").text
    assert "Import from a git URL" in page
    assert re.search(r'<input name="source_token"[^>]*type="password"', page)
    url = private.repo_url("secret-dashboard")

    r = alice.create(name="web-import", source_url=url, source_token=WRONG,
                     source_username="reader", source_main_file="streamlit_app.py")  # fmt: skip
    assert r.status_code == 422
    assert "refused the token" in r.text
    assert WRONG not in r.text  # the form comes back with what was typed, but the token
    assert f'value="{url}"' in r.text and 'value="streamlit_app.py"' in r.text
    nothing_left(nakama, "web-import")

    r = alice.create(name="web-import", source_url=url, source_token=TOKEN,
                     source_username="reader")  # fmt: skip
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/projects/web-import"
    shown = alice.http.get("/projects/web-import").text
    assert "main file: streamlit_app.py (found at the root)" in shown
    assert TOKEN not in shown
    assert nakama.project("web-import")["status"] in ("building", "running")

    bob = Browser(nakama, "bob", "bob-password-1")
    assert bob.http.get("/projects/web-import").status_code == 404
    assert "web-import" not in bob.http.get("/projects").text
