"""A project's environment variables against a real ``nakama up``, real app processes and real
git: the app sees them after the restart a change makes, after a push and after Nakama restarts;
the API shows a plain value and never a secret's; neither the server's log nor an error shows a
secret, nor does the database file (secrets are encrypted at rest); another user's project
answers 404; bad names and values answer 422 with a message."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
    wait_for,
    write_tiny_kit,
)

# Answers GET /env/<NAME> with the variable's value ("<unset>" if it has none) and GET / with
# VERSION. With FAIL_AT_START set it prints its variables and exits, as a broken app would.
ENV_APP = """\
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1"

if os.environ.get("FAIL_AT_START"):
    print("refusing to start with", os.environ["FAIL_AT_START"], os.environ.get("API_TOKEN"))
    sys.exit(1)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/env/"):
            body = os.environ.get(self.path[len("/env/"):], "<unset>").encode()
        else:
            body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

NAME = "vars-app"
API_URL = "https://api.example.com/v2"
SECRET = "sk-live-9f8e7d6c5b4a3f"
CRASH_SECRET = "crash-secret-value-1234"
BOB_APP = "bobs-app"
BOB_SECRET = "bobs-db-password-5678"


@pytest.fixture
def nakama(tmp_path: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit", app=ENV_APP)
    with running(tmp_path / "data", starter_kit=kit, uv_cache=uv_cache) as server:
        yield server


def user(nakama: NakamaProcess, username: str) -> tuple[str, httpx.Client]:
    r = nakama.api.post("/api/v1/users", json={"username": username})
    assert r.status_code == 201, r.text
    token = str(r.json()["token"])
    headers = {"Authorization": f"Bearer {token}"}
    return token, httpx.Client(base_url=nakama.url, timeout=60, headers=headers)


def env_of(app_url: str, key: str) -> str | None:
    return fetch_text(f"{app_url}env/{key}")


def raw_variables(data_dir: Path) -> list[tuple[str, str, str, int]]:
    """(project, key, value, secret) as the database file holds them."""
    with closing(sqlite3.connect(data_dir / "nakama.db")) as db:
        return db.execute(
            "SELECT project, key, value, secret FROM project_variables ORDER BY id"
        ).fetchall()


def test_variables_reach_the_app_and_secrets_stay_hidden(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    _, bob = user(nakama, "bob")
    variables = f"/api/v1/projects/{NAME}/variables"
    with alice, bob:
        assert alice.post("/api/v1/projects", json={"name": NAME}).status_code == 201
        first = nakama.pipelines(NAME)[0]["commit"]
        app_url = nakama.wait_deployed(NAME, first)["app_url"]
        assert env_of(app_url, "API_URL") == "<unset>"
        assert alice.get(variables).json() == []

        # A plain variable and a secret: each PUT answers once the app restarted with it.
        plain = alice.put(f"{variables}/API_URL", json={"value": API_URL})
        assert plain.status_code == 200, plain.text
        assert plain.json()["value"] == API_URL and plain.json()["secret"] is False
        secret = alice.put(f"{variables}/API_TOKEN", json={"value": SECRET, "secret": True})
        assert secret.status_code == 200, secret.text
        assert secret.json()["value"] is None and secret.json()["preview"] == "…3f"
        assert SECRET not in secret.text
        assert env_of(app_url, "API_URL") == API_URL
        assert env_of(app_url, "API_TOKEN") == SECRET

        listed = alice.get(variables)
        assert listed.status_code == 200
        assert [(v["key"], v["secret"], v["value"], v["preview"]) for v in listed.json()] == [
            ("API_TOKEN", True, None, "…3f"),
            ("API_URL", False, API_URL, None),
        ]
        assert SECRET not in listed.text
        assert SECRET not in nakama.api.get(variables).text  # not even for an admin

        # Another user's project: 404, as if it did not exist, and nothing changes.
        for answer in (
            bob.get(variables),
            bob.put(f"{variables}/API_URL", json={"value": "https://evil.example"}),
            bob.delete(f"{variables}/API_URL"),
        ):
            assert answer.status_code == 404, answer.text
            assert answer.json()["detail"] == f"project {NAME!r} not found"
        assert bob.get("/api/v1/projects/nothing-here/variables").status_code == 404
        assert env_of(app_url, "API_URL") == API_URL

        # Bob's own project has a secret too. Neither user's secret is in the database file as
        # text: secrets are stored encrypted, with a key kept apart from it (mode 0600).
        assert bob.post("/api/v1/projects", json={"name": BOB_APP}).status_code == 201
        nakama.wait_deployed(BOB_APP, nakama.pipelines(BOB_APP)[0]["commit"])
        bobs = bob.put(
            f"/api/v1/projects/{BOB_APP}/variables/DB_PASSWORD",
            json={"value": BOB_SECRET, "secret": True},
        )
        assert bobs.status_code == 200, bobs.text
        assert alice.get(f"/api/v1/projects/{BOB_APP}/variables").status_code == 404
        raw = raw_variables(nakama.data_dir)
        assert {(project, key, secret) for project, key, _, secret in raw} == {
            (NAME, "API_URL", 0),
            (NAME, "API_TOKEN", 1),
            (BOB_APP, "DB_PASSWORD", 1),
        }
        for _, key, stored, secret in raw:
            assert stored.startswith("fernet:") if secret else stored == API_URL, key
        dump = (nakama.data_dir / "nakama.db").read_bytes() + repr(raw).encode()
        wal = nakama.data_dir / "nakama.db-wal"
        dump += wal.read_bytes() if wal.exists() else b""
        assert SECRET.encode() not in dump and BOB_SECRET.encode() not in dump
        assert API_URL.encode() in dump  # a plain variable stays plain
        key_file = nakama.data_dir / "secrets.key"
        assert key_file.stat().st_mode & 0o777 == 0o600

        # Bad names and values: 422 with a message that never repeats the value.
        for key, words in [
            ("PORT", "Nakama sets it for the app"),
            ("NAKAMA_ADMIN_TOKEN", "starting with NAKAMA_ are Nakama's own"),
            ("1ST", "not starting with a digit"),
            ("API-URL", "only letters, digits and '_'"),
            ("K" * 101, "at most 100"),
        ]:
            r = alice.put(f"{variables}/{key}", json={"value": SECRET, "secret": True})
            assert r.status_code == 422, (key, r.text)
            assert words in r.json()["detail"] and SECRET not in r.text
        for body, words in [
            ({"value": "x" * (32 * 1024) + SECRET}, "at most 32768"),
            ({"value": SECRET + "\u0000"}, "NUL"),
            ({"value": 8765432109876543}, "body.value: Input should be a valid string"),
            ({"value": SECRET, "secret": True, "extra": SECRET}, "body.extra: Extra inputs"),
            ({"secret": True}, "body.value: Field required"),
        ]:
            r = alice.put(f"{variables}/OTHER", json=body)
            assert r.status_code == 422, (body, r.text)
            assert words in r.json()["detail"]
            assert SECRET not in r.text and "8765432109876543" not in r.text
        assert alice.delete(f"{variables}/NOT_THERE").status_code == 404

        # An app that does not start with a change: the error tells, the secrets stay hidden,
        # and removing the bad variable brings the app back.
        crash = alice.put(
            f"{variables}/FAIL_AT_START", json={"value": CRASH_SECRET, "secret": True}
        )
        assert crash.status_code == 502, crash.text
        assert "saved, but not applied" in crash.text and "refusing to start" in crash.text
        assert "[REDACTED]" in crash.text
        assert CRASH_SECRET not in crash.text and SECRET not in crash.text
        assert alice.delete(f"{variables}/FAIL_AT_START").status_code == 204
        assert env_of(app_url, "API_TOKEN") == SECRET
        assert env_of(app_url, "FAIL_AT_START") == "<unset>"

        # A push restarts the app: it keeps its variables.
        work = tmp_path / "work"
        clone_url = nakama.project(NAME)["clone_url"]
        git("clone", "-q", clone_url.replace("http://", f"http://alice:{alice_token}@"),
            str(work), cwd=tmp_path)  # fmt: skip
        set_version(work, "v2")
        git("commit", "-qam", "v2", cwd=work)
        git_push(work)
        nakama.wait_deployed(NAME, git("rev-parse", "HEAD", cwd=work))
        assert fetch_text(app_url) == "v2"
        assert env_of(app_url, "API_URL") == API_URL
        assert env_of(app_url, "API_TOKEN") == SECRET

    # Nakama restarts: the restored app has them too.
    nakama.stop()
    assert fetch_text(app_url) is None
    nakama.start()
    wait_for(lambda: fetch_text(app_url) == "v2", timeout=60, what="the app to come back")
    assert env_of(app_url, "API_URL") == API_URL
    assert env_of(app_url, "API_TOKEN") == SECRET

    # Deleting a variable restarts the app without it.
    assert nakama.api.delete(f"{variables}/API_URL").status_code == 204
    assert env_of(app_url, "API_URL") == "<unset>"
    assert nakama.api.delete(f"{variables}/API_URL").status_code == 404
    assert [v["key"] for v in nakama.api.get(variables).json()] == ["API_TOKEN"]

    # Deleting the project deletes its variables.
    assert nakama.api.delete(f"/api/v1/projects/{NAME}").status_code == 202
    wait_for(
        lambda: nakama.api.get(f"/api/v1/projects/{NAME}").status_code == 404,
        timeout=60,
        what="the project to be deleted",
    )
    assert [(project, key) for project, key, _, _ in raw_variables(nakama.data_dir)] == [
        (BOB_APP, "DB_PASSWORD")
    ]

    server_log = nakama.log_path.read_text(errors="replace")
    assert "variable set" in server_log  # the log does say what happened ...
    assert SECRET not in server_log and CRASH_SECRET not in server_log  # ... never the value
    assert BOB_SECRET not in server_log
