"""What a new user trips over on the command line, against a real `nakama up` with alice's
project and bob beside her: restarting and opening an app, a failed pipeline in the table, what
a refusal says (no access is not a login matter), the server's own words for bad input, local
mode's messages free of the cluster's parts, and times in the reader's own zone."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from nakama_cli.commands import short_reason
from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    fetch_text,
    git,
    git_push,
    wait_for,
)
from tests.e2e.two_users import Run, alice_and_bob_with_a_project, serve_tiny_kit
from tests.integration.test_web_security import csrf_of

PROJECT = "frictions-app"
# Words of cluster mode's parts, which local mode's messages must not use.
CLUSTER_WORDS = re.compile(r"kubernetes|gitlab|dns-1123|\bpods?\b|namespace", re.IGNORECASE)

CRASHING_APP = """\
import sys

def start():
    raise RuntimeError("boom: this version cannot start")

print("crashing app starting", flush=True)
start()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    yield from serve_tiny_kit(tmp_path_factory.mktemp("cli-frictions"), uv_cache)


@pytest.fixture(scope="module")
def users(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return alice_and_bob_with_a_project(server, tmp_path_factory, PROJECT)


@pytest.fixture(scope="module")
def alice(users: dict[str, Run]) -> Run:
    return users["alice"]


@pytest.fixture(scope="module")
def bob(users: dict[str, Run]) -> Run:
    return users["bob"]


def one_line(text: str) -> str:
    return " ".join(text.split())


def starts(server: NakamaProcess) -> int:
    """How often the app's process was started (the supervisor's line in the app's log)."""
    r = server.api.get(f"/api/v1/projects/{PROJECT}/logs", params={"tail": 10000})
    assert r.status_code == 200, r.text
    return r.text.count("--- started pid")


def shared_as_viewer(alice: Run) -> None:
    out = alice("projects", "share", PROJECT, "bob", "--role", "viewer")
    assert out.returncode == 0, out.stderr


# --- restart and open ------------------------------------------------------------------------
def test_restart_starts_the_app_again_for_its_developers_only(
    server: NakamaProcess, alice: Run, bob: Run
) -> None:
    before = starts(server)
    out = alice("projects", "restart", PROJECT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{PROJECT}: restarted (app running)"
    assert starts(server) == before + 1
    assert fetch_text(server.project(PROJECT)["app_url"]) == "v1"

    hidden = bob("projects", "restart", PROJECT)
    assert hidden.returncode == 3, hidden.stderr
    assert f"project {PROJECT!r} not found" in hidden.stderr
    shared_as_viewer(alice)
    try:
        low = bob("projects", "restart", PROJECT, "--json")
        assert low.returncode == 4, low.stderr
        assert f"you do not have access to the restart of project {PROJECT!r}" in one_line(
            low.stderr
        )
        assert "needs developer or higher" in one_line(low.stderr)
    finally:
        assert alice("projects", "unshare", PROJECT, "bob").returncode == 0
    assert starts(server) == before + 1  # bob restarted nothing


def test_open_opens_the_apps_url_or_prints_it(
    server: NakamaProcess, alice: Run, bob: Run, tmp_path: Path
) -> None:
    url = server.project(PROJECT)["app_url"]
    printed = alice("open", PROJECT, "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == url + "\n"

    opened_file = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened_file}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    opened = alice("open", PROJECT, env={"BROWSER": str(browser)})
    assert opened.returncode == 0, opened.stderr
    assert opened_file.read_text() == url
    assert opened.stdout == ""

    # No desktop and no BROWSER (a server over SSH): the URL, and what to do with it.
    headless = alice("open", PROJECT, env={"BROWSER": "", "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert headless.returncode == 0, headless.stderr
    assert headless.stdout == url + "\n"
    assert "open the URL above yourself" in headless.stderr

    hidden = bob("open", PROJECT, "--print")
    assert hidden.returncode == 3 and hidden.stdout == ""


# --- what refusals say ---------------------------------------------------------------------------
def test_no_access_is_told_as_such_and_only_a_bad_token_as_a_login_matter(
    server: NakamaProcess, alice: Run, bob: Run
) -> None:
    admins = bob("users", "list")
    assert admins.returncode == 4, admins.stderr
    assert one_line(admins.stderr) == (
        "error: you do not have access to the users: only an admin may do this"
    )
    tokens = bob("users", "tokens", "alice")
    assert tokens.returncode == 4
    assert "you do not have access to the tokens of user 'alice'" in one_line(tokens.stderr)
    shared_as_viewer(alice)
    try:
        for args, what in (
            (("pipelines", PROJECT), "the pipelines"),
            (("logs", PROJECT), "the logs"),
            (("projects", "visibility", PROJECT, "public"), "project"),
        ):
            out = bob(*args)
            assert out.returncode == 4, (args, out.stderr)
            message = one_line(out.stderr)
            assert message.startswith(f"error: you do not have access to {what}"), message
            assert "your role in project 'frictions-app' is viewer" in message
            assert "not authenticated" not in message and "nakama login" not in message
    finally:
        assert alice("projects", "unshare", PROJECT, "bob").returncode == 0

    wrong = alice("projects", "list", env={"NAKAMA_TOKEN": "nkm_not_a_real_token_0000"})
    assert wrong.returncode == 4
    assert "not authenticated (401): invalid token (run `nakama login`)" in one_line(wrong.stderr)


def test_bad_input_is_answered_in_the_servers_own_words(server: NakamaProcess, alice: Run) -> None:
    out = alice("projects", "create", "Sales_Dashboard")
    assert out.returncode == 6, out.stderr
    assert one_line(out.stderr) == (
        "error: invalid: the name has upper-case letters; use lower-case a-z, digits and '-' "
        "(a name such as 'sales-dashboard')"
    )
    r = server.api.post("/api/v1/projects", json={"name": "9lives"})
    assert r.status_code == 422
    assert r.json() == {
        "detail": "the name must start with a letter (a name such as 'sales-dashboard')"
    }
    # pydantic's own checks keep saying where the problem is
    r = server.api.patch(f"/api/v1/projects/{PROJECT}", json={"visibility": "everyone"})
    assert r.status_code == 422
    assert r.json() == {
        "detail": "body.visibility: Input should be 'private', 'internal' or 'public'"
    }
    assert server.api.get("/api/v1/projects/9lives").status_code == 404


class _Text(HTMLParser):
    """The text a page shows (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def shown(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


BAD_NAMES = ("Sales_Dashboard", "9lives", "-dash", "a" * 41, "café", "")


def test_local_mode_speaks_of_no_cluster_parts(server: NakamaProcess, alice: Run) -> None:
    said = []
    for name in [n for n in BAD_NAMES if n]:
        out = alice("projects", "create", "--", name)
        assert out.returncode == 6, (name, out.stderr)
        said.append(out.stderr)
    maintainer = alice("projects", "create", "with-maintainer", "--maintainer", "bob")
    assert maintainer.returncode == 6, maintainer.stderr
    said.append(maintainer.stderr)
    assert "leave out 'maintainer'" in one_line(maintainer.stderr)

    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as web:
        page = web.get("/login")
        said.append(shown(page.text))
        signed_in = web.post(
            "/login",
            data={"username": "admin", "password": ADMIN_TOKEN, "csrf_token": csrf_of(page.text)},
        )
        assert signed_in.status_code == 200, signed_in.text
        listing = web.get("/projects")
        said.append(shown(listing.text))
        for name in BAD_NAMES:
            check = web.get("/projects/name-check", params={"name": name})
            assert check.status_code == 200
            said.append(shown(check.text))
        refused = web.post(
            "/projects", data={"name": "9lives", "csrf_token": csrf_of(listing.text)}
        )
        assert refused.status_code == 422
        said.append(shown(refused.text))
        assert "the name must start with a letter" in said[-1]
        pipeline = server.pipelines(PROJECT)[-1]["id"]
        for path in (
            f"/projects/{PROJECT}",
            f"/projects/{PROJECT}/pipelines/{pipeline}",
            "/account",
        ):
            answer = web.get(path)
            assert answer.status_code == 200, path
            said.append(shown(answer.text))
    found = {m.group(0) for text in said for m in CLUSTER_WORDS.finditer(text)}
    assert not found, [text for text in said if CLUSTER_WORDS.search(text)]


# --- times -------------------------------------------------------------------------------------
def test_times_are_shown_in_the_readers_zone(server: NakamaProcess, alice: Run) -> None:
    project = server.project(PROJECT)
    created = datetime.fromisoformat(project["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    for zone in ("Asia/Tokyo", "UTC", "America/New_York"):
        out = alice("projects", "show", PROJECT, env={"TZ": zone})
        assert out.returncode == 0, out.stderr
        local = created.astimezone(ZoneInfo(zone)).isoformat(sep=" ", timespec="seconds")
        row = next(line for line in out.stdout.splitlines() if line.startswith("created"))
        assert row.split(None, 1)[1].strip() == local
    tokyo = alice("projects", "show", PROJECT, env={"TZ": "Asia/Tokyo"}).stdout
    assert "+09:00" in tokyo

    tokens = alice("users", "tokens", "alice", env={"TZ": "Asia/Tokyo"})
    made = server.api.get("/api/v1/users/alice/tokens").json()[0]["created_at"]
    in_tokyo = datetime.fromisoformat(made).astimezone(ZoneInfo("Asia/Tokyo"))
    assert in_tokyo.isoformat(sep=" ", timespec="seconds") in tokens.stdout

    first = min(server.pipelines(PROJECT), key=lambda p: p["id"])
    started = datetime.fromisoformat(first["started_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    table = alice("pipelines", PROJECT, env={"TZ": "Asia/Tokyo"})
    assert started.isoformat(sep=" ", timespec="seconds") in table.stdout


# --- a failed pipeline -------------------------------------------------------------------------
def test_a_failed_pipeline_is_one_line_in_the_table_and_whole_in_its_log(
    server: NakamaProcess, alice: Run, tmp_path: Path
) -> None:
    token = alice.env["NAKAMA_TOKEN"]  # type: ignore[attr-defined]
    clone_url = server.project(PROJECT)["clone_url"]
    work = tmp_path / "work"
    git(
        "clone",
        "-q",
        clone_url.replace("http://", f"http://alice:{token}@"),
        str(work),
        cwd=tmp_path,
    )
    (work / "app.py").write_text(CRASHING_APP)
    git("commit", "-qam", "a version that cannot start", cwd=work)
    git_push(work)
    commit = git("rev-parse", "HEAD", cwd=work)
    failed = server.wait_failed(PROJECT, commit, timeout=120)
    assert "Traceback (most recent call last)" in failed["error"]  # what the API has to say

    out = alice("pipelines", PROJECT)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 + len(server.pipelines(PROJECT))  # the header, one line a pipeline
    row = next(line for line in lines if line.split()[0] == str(failed["id"]))
    assert f"failed: {short_reason(failed['error'])}" in row
    assert f"app {PROJECT!r} exited with code 1 while starting" in row
    assert "Traceback" not in out.stdout and "boom" not in out.stdout
    assert f"nakama pipelines {PROJECT} --log {failed['id']}" in out.stderr

    log = alice("pipelines", PROJECT, "--log", str(failed["id"]))
    assert log.returncode == 0, log.stderr
    assert "Traceback (most recent call last)" in log.stdout
    assert "RuntimeError: boom: this version cannot start" in log.stdout
    as_json = json.loads(alice("pipelines", PROJECT, "--json").stdout)
    assert next(p for p in as_json if p["id"] == failed["id"])["error"] == failed["error"]
    # the old version goes on serving
    wait_for(lambda: fetch_text(server.project(PROJECT)["app_url"]) == "v1", timeout=30, what="v1")


def test_short_reason_keeps_the_first_line_and_cuts_it() -> None:
    assert short_reason(None) == "" and short_reason("") == ""
    error = "app 'x' exited with code 1 while starting; last log lines:\nTraceback (most recent"
    assert short_reason(error) == "app 'x' exited with code 1 while starting"
    assert short_reason("build failed:\nerror: no such package") == "build failed"
    long = "uv pip install failed because " + "x" * 100
    assert short_reason(long) == long[:59] + "…" and len(short_reason(long)) == 60
