"""Users against a real ``nakama up``: each sees and changes only their own projects (another's
answers 404, as a missing one), git over HTTP included; an admin sees all and manages users."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nakama.auth import verify_password
from tests.e2e.nakama_server import NakamaProcess, write_tiny_kit


@pytest.fixture
def nakama(tmp_path: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    server = NakamaProcess(
        data_dir=tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv-cache"
    )
    server.start()
    yield server
    server.close()


def client(nakama: NakamaProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=nakama.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def make_user(nakama: NakamaProcess, username: str, password: str | None = None) -> str:
    body: dict[str, Any] = {"username": username}
    if password is not None:
        body["password"] = password
    r = nakama.api.post("/api/v1/users", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["username"] == username
    return str(r.json()["token"])


def git_clone(url: str, token: str, dest: Path) -> subprocess.CompletedProcess[str]:
    authed = url.replace("http://", f"http://someone:{token}@")
    return subprocess.run(
        ["git", "clone", "-q", authed, str(dest)],
        capture_output=True,
        text=True,
        check=False,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )


def test_users_see_only_their_own_projects(nakama: NakamaProcess, tmp_path: Path) -> None:
    alice_token = make_user(nakama, "alice", password="correct horse battery")
    bob_token = make_user(nakama, "bob")
    alice, bob = client(nakama, alice_token), client(nakama, bob_token)
    with alice, bob:
        created = alice.post("/api/v1/projects", json={"name": "alices-app"})
        assert created.status_code == 201, created.text
        clone_url = created.json()["clone_url"]

        assert bob.get("/api/v1/projects").json() == []
        assert [p["name"] for p in alice.get("/api/v1/projects").json()] == ["alices-app"]
        for path in (
            "/api/v1/projects/alices-app",
            "/api/v1/projects/alices-app/pipelines",
            "/api/v1/projects/alices-app/pipelines/1",
            "/api/v1/projects/alices-app/pipelines/1/log",
            "/api/v1/projects/alices-app/logs",
        ):
            r = bob.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["detail"] == "project 'alices-app' not found"
        assert bob.delete("/api/v1/projects/alices-app").status_code == 404
        # Answered like a project that does not exist at all.
        assert bob.get("/api/v1/projects/nothing-here").json() == {
            "detail": "project 'nothing-here' not found"
        }
        mine = alice.get("/api/v1/projects/alices-app")
        assert mine.status_code == 200 and mine.json()["status"] != "deleting"
        assert alice.get("/api/v1/projects/alices-app/pipelines").status_code == 200

        # Git over HTTP: bob's valid token does not reach alice's repository; alice's does.
        refused = git_clone(clone_url, bob_token, tmp_path / "bob-clone")
        assert refused.returncode != 0
        assert not (tmp_path / "bob-clone" / "app.py").exists()
        assert git_clone(clone_url, alice_token, tmp_path / "alice-clone").returncode == 0
        assert (tmp_path / "alice-clone" / "app.py").is_file()
        assert git_clone(clone_url, "nkm_wrong", tmp_path / "nobody").returncode != 0

        # Only an admin manages users; a user may make tokens for themselves only.
        assert bob.post("/api/v1/users", json={"username": "mallory"}).status_code == 403
        assert bob.get("/api/v1/users").status_code == 403
        assert bob.post("/api/v1/users/alice/tokens").status_code == 403
        second = bob.post("/api/v1/users/bob/tokens")
        assert second.status_code == 201 and second.json()["token"] != bob_token
        with client(nakama, second.json()["token"]) as bob2:
            assert bob2.get("/api/v1/projects").json() == []

    # The admin sees everyone's projects and users.
    assert nakama.api.post("/api/v1/projects", json={"name": "admins-app"}).status_code == 201
    names = [p["name"] for p in nakama.api.get("/api/v1/projects").json()]
    assert names == ["admins-app", "alices-app"]
    assert nakama.api.get("/api/v1/projects/alices-app").status_code == 200
    users = {u["username"]: u for u in nakama.api.get("/api/v1/users").json()}
    assert set(users) == {"admin", "alice", "bob"}
    assert users["admin"]["is_admin"] and not users["alice"]["is_admin"]
    assert nakama.api.post("/api/v1/users", json={"username": "alice"}).status_code == 409
    assert nakama.api.post("/api/v1/users", json={"username": "Bad Name"}).status_code == 422
    assert nakama.api.post("/api/v1/users/carol/tokens").status_code == 404
    with client(nakama, alice_token) as alice:
        assert [p["name"] for p in alice.get("/api/v1/projects").json()] == ["alices-app"]

    # Tokens and passwords are stored hashed; the admin token belongs to the admin user.
    with sqlite3.connect(nakama.data_dir / "nakama.db") as db:
        dump = str(db.execute("SELECT * FROM api_tokens").fetchall())
        dump += str(db.execute("SELECT * FROM users").fetchall())
        (stored,) = db.execute("SELECT password_hash FROM users WHERE username='alice'").fetchone()
        (bob_hash,) = db.execute("SELECT password_hash FROM users WHERE username='bob'").fetchone()
        orphans = db.execute("SELECT count(*) FROM api_tokens WHERE user_id IS NULL").fetchone()[0]
        owners = dict(
            db.execute(
                "SELECT p.name, u.username FROM projects p JOIN users u ON u.id = p.owner_id"
            ).fetchall()
        )
    for secret in (
        alice_token,
        bob_token,
        "correct horse battery",
        nakama.env["NAKAMA_ADMIN_TOKEN"],
    ):
        assert secret not in dump
    assert stored.startswith("scrypt$") and verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    assert bob_hash is None
    assert orphans == 0
    assert owners == {"alices-app": "alice", "admins-app": "admin"}


def password_hash(nakama: NakamaProcess, username: str) -> str | None:
    with sqlite3.connect(nakama.data_dir / "nakama.db") as db:
        (stored,) = db.execute(
            "SELECT password_hash FROM users WHERE username=?", (username,)
        ).fetchone()
    return None if stored is None else str(stored)


def test_a_password_is_set_by_an_admin_or_the_user_and_never_echoed(
    nakama: NakamaProcess,
) -> None:
    alice_token = make_user(nakama, "alice")
    bob_token = make_user(nakama, "bob", password="bobs first password")
    assert password_hash(nakama, "alice") is None

    # the admin sets anyone's
    r = nakama.api.put("/api/v1/users/alice/password", json={"password": "alices password"})
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert verify_password("alices password", password_hash(nakama, "alice"))
    with client(nakama, alice_token) as alice, client(nakama, bob_token) as bob:
        # a user sets their own; their tokens stay valid
        r = alice.put("/api/v1/users/alice/password", json={"password": "alices second pw"})
        assert r.status_code == 204, r.text
        assert verify_password("alices second pw", password_hash(nakama, "alice"))
        assert alice.get("/api/v1/projects").status_code == 200
        # ... but nobody else's, known or not (403 before any lookup)
        for name in ("bob", "admin", "nobody"):
            r = alice.put(f"/api/v1/users/{name}/password", json={"password": "taken over!"})
            assert r.status_code == 403, (name, r.text)
        assert verify_password("bobs first password", password_hash(nakama, "bob"))
        assert bob.get("/api/v1/projects").status_code == 200

    assert (
        nakama.api.put(
            "/api/v1/users/nobody/password", json={"password": "long enough"}
        ).status_code
        == 404
    )
    # refusals say what is wrong, never the password itself
    for body, words in [
        ({"password": "short7!"}, "a password must be 8 to 1024 characters long"),
        ({"password": "x" * 1025}, "a password must be 8 to 1024 characters long"),
        ({"password": "long enough", "extra": 1}, "extra"),
        ({}, "password"),
    ]:
        r = nakama.api.put("/api/v1/users/alice/password", json=body)
        assert r.status_code == 422, body
        assert words in r.text
        assert str(body.get("password")) not in r.text
    assert verify_password("alices second pw", password_hash(nakama, "alice"))
    for secret in ("alices password", "alices second pw", "short7!", alice_token):
        assert secret not in nakama.log()


def test_a_refused_body_is_never_repeated_back(nakama: NakamaProcess) -> None:
    r = nakama.api.post("/api/v1/users", json={"username": "dave", "password": "short7!"})
    assert r.status_code == 422
    assert "short7!" not in r.text
    assert "password" in r.json()["detail"]
    r = nakama.api.post("/api/v1/projects", json={"name": "Bad_Name"})
    assert r.status_code == 422
    assert r.json()["detail"].endswith("(a name such as 'sales-dashboard')")
