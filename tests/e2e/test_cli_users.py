"""`nakama users tokens|revoke|remove` against a real `nakama up`: alice lists and revokes her
own tokens (never shown), bob cannot touch hers, and an admin removes bob, his project going
to the admin."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, write_tiny_kit
from tests.e2e.test_cli import NAKAMA, cli_env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NakamaProcess]:
    nakama = NakamaProcess(
        data_dir=tmp_path / "data",
        starter_kit=write_tiny_kit(tmp_path / "kit"),
        uv_cache=tmp_path / "uv-cache",
    )
    nakama.start()
    yield nakama
    nakama.close()
    nakama.kill_apps()


def cli(
    server: NakamaProcess, tmp: Path, token: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp / "cfg", NAKAMA_URL=server.url, NAKAMA_TOKEN=token)
    return subprocess.run(
        [NAKAMA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_tokens_are_listed_revoked_and_users_removed(server: NakamaProcess, tmp_path: Path) -> None:
    made = {
        name: server.api.post("/api/v1/users", json={"username": name}).json()["token"]
        for name in ("alice", "bob")
    }
    laptop = cli(server, tmp_path, made["alice"], "users", "token", "alice", "--name", "laptop")
    assert laptop.returncode == 0, laptop.stderr
    laptop_token = laptop.stdout.strip()
    listed = cli(server, tmp_path, made["alice"], "users", "tokens", "alice", "--json")
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)
    assert [t["name"] for t in tokens] == ["alice", "laptop"]
    table = cli(server, tmp_path, made["alice"], "users", "tokens", "alice")
    assert "laptop" in table.stdout
    for secret in (made["alice"], laptop_token):
        assert secret not in listed.stdout + table.stdout

    laptop_id = str(tokens[1]["id"])
    refused = cli(server, tmp_path, made["bob"], "users", "revoke", "alice", laptop_id)
    assert refused.returncode == 4
    assert "you do not have access to the tokens of user 'alice'" in refused.stderr
    revoked = cli(server, tmp_path, made["alice"], "users", "revoke", "alice", laptop_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    bearer = {"Authorization": f"Bearer {laptop_token}"}
    assert httpx.get(f"{server.url}/api/v1/projects", headers=bearer).status_code == 401

    assert cli(server, tmp_path, made["bob"], "projects", "create", "bobs-app").returncode == 0
    without = cli(server, tmp_path, ADMIN_TOKEN, "users", "remove", "bob")
    assert without.returncode == 5 and "bobs-app" in without.stderr
    removed = cli(server, tmp_path, ADMIN_TOKEN, "users", "remove", "bob", "--projects", "transfer")
    assert removed.returncode == 0, removed.stderr
    assert "now yours: bobs-app" in removed.stdout
    assert server.project("bobs-app")["owner"] == "admin"
    gone = cli(server, tmp_path, made["bob"], "projects", "list")
    assert gone.returncode == 4
