"""Credentials that can be taken back, against a real ``nakama up`` on SQLite and PostgreSQL
(review M6): a password change ends the user's web sessions; users list and revoke their own
tokens (bob neither sees nor revokes alice's); rotating NAKAMA_ADMIN_TOKEN revokes the old one;
an admin removes a user, whose projects go to the admin or are deleted; a short admin token
stops the start with a message that names the variable and not the value."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, wait_for, write_tiny_kit
from tests.integration.test_web_security import csrf_of

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-pass-333"}


def start(tmp_path: Path, database_url: str, admin_token: str = ADMIN_TOKEN) -> NakamaProcess:
    server = NakamaProcess(
        data_dir=tmp_path / "data",
        starter_kit=tmp_path / "kit" if (tmp_path / "kit").exists() else None,
        uv_cache=tmp_path / "uv-cache",
        extra_env={"NAKAMA_DATABASE_URL": database_url, "NAKAMA_ADMIN_TOKEN": admin_token},
    )
    server.api.headers["Authorization"] = f"Bearer {admin_token}"
    server.start()
    return server


@pytest.fixture
def nakama(tmp_path: Path, database_url: str) -> Iterator[NakamaProcess]:
    write_tiny_kit(tmp_path / "kit")
    server = start(tmp_path, database_url)
    tokens = {}
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        tokens[username] = r.json()["token"]
    server.tokens = tokens  # type: ignore[attr-defined]
    yield server
    server.close()
    server.kill_apps()


def api(nakama: NakamaProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=nakama.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def browser(nakama: NakamaProcess, username: str, password: str | None = None) -> httpx.Client:
    http = httpx.Client(base_url=nakama.url, timeout=30, follow_redirects=False)
    page = http.get("/login")
    r = http.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "csrf_token": csrf_of(page.text),
        },
    )
    assert r.status_code == 303, r.text
    assert http.get("/projects").status_code == 200
    return http


def signed_in(http: httpx.Client) -> bool:
    return http.get("/projects").status_code == 200


def test_a_password_change_ends_the_users_web_sessions(nakama: NakamaProcess) -> None:
    tokens = nakama.tokens  # type: ignore[attr-defined]
    alice_laptop, alice_phone, bob = (
        browser(nakama, "alice"),
        browser(nakama, "alice"),
        browser(nakama, "bob"),
    )
    with (
        closing(alice_laptop),
        closing(alice_phone),
        closing(bob),
        api(nakama, tokens["alice"]) as alice_api,
    ):
        r = alice_api.put("/api/v1/users/alice/password", json={"password": "alices-new-pass"})
        assert r.status_code == 204
        # Whoever had alice's old password (and a session) is out; bob is not touched.
        assert not signed_in(alice_laptop) and not signed_in(alice_phone)
        assert signed_in(bob)
        assert alice_api.get("/api/v1/projects").status_code == 200  # tokens stay
        with closing(
            browser(nakama, "alice", "alices-new-pass")
        ) as again:  # the new password works
            assert signed_in(again)
        # An admin's reset ends them too.
        with closing(browser(nakama, "bob")) as bob_again:
            r = nakama.api.put("/api/v1/users/bob/password", json={"password": "bobs-reset-pw"})
            assert r.status_code == 204
            assert not signed_in(bob) and not signed_in(bob_again)


def test_users_list_and_revoke_their_own_tokens_only(nakama: NakamaProcess) -> None:
    tokens = nakama.tokens  # type: ignore[attr-defined]
    with api(nakama, tokens["alice"]) as alice, api(nakama, tokens["bob"]) as bob:
        laptop = alice.post("/api/v1/users/alice/tokens", json={"name": "laptop"})
        assert laptop.status_code == 201
        laptop_token = laptop.json()["token"]
        listed = alice.get("/api/v1/users/alice/tokens")
        assert listed.status_code == 200
        assert [t["name"] for t in listed.json()] == ["alice", "laptop"]
        assert set(listed.json()[0]) == {"id", "name", "created_at", "last_used_at", "bootstrap"}
        assert listed.json()[0]["last_used_at"] is not None  # alice's first token was used
        for secret in (tokens["alice"], laptop_token):
            assert secret not in listed.text
        laptop_id = listed.json()[1]["id"]

        # bob can neither list nor revoke alice's tokens, by name or by id under his own.
        assert bob.get("/api/v1/users/alice/tokens").status_code == 403
        assert bob.delete(f"/api/v1/users/alice/tokens/{laptop_id}").status_code == 403
        assert bob.delete(f"/api/v1/users/bob/tokens/{laptop_id}").status_code == 404
        with api(nakama, laptop_token) as on_laptop:
            assert on_laptop.get("/api/v1/projects").status_code == 200

            # alice revokes her laptop's token: it stops at once; her other token works.
            assert alice.delete(f"/api/v1/users/alice/tokens/{laptop_id}").status_code == 204
            assert on_laptop.get("/api/v1/projects").status_code == 401
        assert alice.get("/api/v1/projects").status_code == 200
        assert alice.delete(f"/api/v1/users/alice/tokens/{laptop_id}").status_code == 404
        # An admin sees and revokes anyone's.
        bobs = nakama.api.get("/api/v1/users/bob/tokens").json()
        assert nakama.api.delete(f"/api/v1/users/bob/tokens/{bobs[0]['id']}").status_code == 204
        assert bob.get("/api/v1/projects").status_code == 401


def test_rotating_the_admin_token_revokes_the_old_one(tmp_path: Path, database_url: str) -> None:
    old = ADMIN_TOKEN
    new = "nkm_rotated_admin_token_fedcba9876543210"
    server = start(tmp_path, database_url, admin_token=old)
    try:
        # A token the admin made for themselves is theirs, not the bootstrap one: it stays.
        own = server.api.post("/api/v1/users/admin/tokens", json={"name": "ops"}).json()["token"]
        alice = server.api.post("/api/v1/users", json={"username": "alice"}).json()["token"]
    finally:
        server.close()
    rotated = start(tmp_path, database_url, admin_token=new)
    try:
        for token, status in ((old, 401), (new, 200), (own, 200), (alice, 200)):
            with api(rotated, token) as client:
                assert client.get("/api/v1/projects").status_code == status
        listed = rotated.api.get("/api/v1/users/admin/tokens").json()
        assert [(t["name"], t["bootstrap"]) for t in listed] == [("ops", False), ("admin", True)]
    finally:
        rotated.close()


def test_an_admin_removes_a_user_and_chooses_what_becomes_of_their_projects(
    nakama: NakamaProcess,
) -> None:
    tokens = nakama.tokens  # type: ignore[attr-defined]
    with api(nakama, tokens["bob"]) as bob, api(nakama, tokens["alice"]) as alice:
        for owner, name in ((bob, "bobs-app"), (bob, "shared-app"), (alice, "alices-app")):
            assert owner.post("/api/v1/projects", json={"name": name}).status_code == 201
        r = bob.put("/api/v1/projects/shared-app/members/alice", json={"role": "owner"})
        assert r.status_code == 200
        r = alice.put("/api/v1/projects/alices-app/members/bob", json={"role": "developer"})
        assert r.status_code == 200
        bob_browser = browser(nakama, "bob")

        # Only an admin removes users; the admin user is never removed.
        assert alice.delete("/api/v1/users/bob").status_code == 403
        r = nakama.api.delete("/api/v1/users/admin")
        assert r.status_code == 409 and "admin" in r.json()["detail"]
        # bob alone owns bobs-app: the admin must say what becomes of it.
        r = nakama.api.delete("/api/v1/users/bob")
        assert r.status_code == 409 and "bobs-app" in r.json()["detail"]
        assert "projects=transfer" in r.json()["detail"]
        assert nakama.api.delete("/api/v1/users/bob?projects=keep").status_code == 422

        r = nakama.api.delete("/api/v1/users/bob?projects=transfer")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "username": "bob",
            "transferred": ["bobs-app"],
            "deleted": [],
            "left": ["alices-app", "shared-app"],
        }
        # bob's token, session and memberships are gone.
        assert bob.get("/api/v1/projects").status_code == 401
        assert not signed_in(bob_browser)
        bob_browser.close()
        users = [u["username"] for u in nakama.api.get("/api/v1/users").json()]
        assert "bob" not in users
        assert nakama.project("bobs-app")["owner"] == "admin"
        assert nakama.project("shared-app")["owner"] == "alice"
        members = alice.get("/api/v1/projects/alices-app/members").json()
        assert [m["username"] for m in members] == ["alice"]
        assert alice.get("/api/v1/projects/shared-app").status_code == 200

    # carol's projects are deleted with her, through the normal delete.
    with api(nakama, tokens["carol"]) as carol:
        assert carol.post("/api/v1/projects", json={"name": "carols-app"}).status_code == 201
    r = nakama.api.delete("/api/v1/users/carol?projects=delete")
    assert r.status_code == 200 and r.json()["deleted"] == ["carols-app"]
    wait_for(
        lambda: nakama.api.get("/api/v1/projects/carols-app").status_code == 404,
        timeout=60,
        what="carols-app to be deleted",
    )
    assert not (nakama.data_dir / "git" / "carols-app.git").exists()
    # A new user of the same name is somebody else: nothing of bob's comes back.
    again = nakama.api.post("/api/v1/users", json={"username": "bob"})
    assert again.status_code == 201
    with api(nakama, again.json()["token"]) as new_bob:
        assert new_bob.get("/api/v1/projects").json() == []


def test_a_short_admin_token_stops_the_start_and_is_not_echoed(tmp_path: Path) -> None:
    exe = shutil.which("nakama")
    assert exe
    weak = "hunter2-admin"
    env = {**os.environ, "NAKAMA_ADMIN_TOKEN": weak}
    out = subprocess.run(
        [exe, "up", "--data-dir", str(tmp_path / "data"), "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "NAKAMA_ADMIN_TOKEN must be at least 32 characters" in out.stderr
    assert weak not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
