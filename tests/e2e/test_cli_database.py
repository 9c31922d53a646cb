"""`nakama projects database show|create|rotate|delete` with the installed console script against
a real `nakama up` whose operator configured a PostgreSQL server (one asking for passwords),
alice's project, bob beside her. The password is printed nowhere, logged nowhere; the roles the
CLI's answers name can (or, after rotation and delete, cannot) log in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import NakamaProcess
from tests.e2e.two_users import Run, alice_and_bob_with_a_project, tiny_server
from tests.integration.test_app_databases import (  # noqa: F401
    ADMIN_PASSWORD,
    addon_server,
    roles_and_databases,
)

PROJECT = "db-app"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    uv_cache: Path,
    addon_server: str,  # noqa: F811
) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("cli-database")
    yield from tiny_server(root, uv_cache, {"NAKAMA_ADDONS__POSTGRES_URL": addon_server})


@pytest.fixture(scope="module")
def users(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return alice_and_bob_with_a_project(server, tmp_path_factory, PROJECT)


def test_create_show_rotate_delete(
    server: NakamaProcess,
    users: dict[str, Run],
    addon_server: str,  # noqa: F811
) -> None:
    alice, bob = users["alice"], users["bob"]
    none = alice("projects", "database", "show", PROJECT)
    assert none.returncode == 0 and "no database" in none.stderr, none.stderr

    made = alice("projects", "database", "create", PROJECT)
    assert made.returncode == 0, made.stderr
    assert f"database nakama_{PROJECT} (ready)" in made.stdout
    assert f"role    nakama_{PROJECT}_1" in made.stdout
    shown = json.loads(alice("projects", "database", "show", PROJECT, "--json").stdout)
    assert shown["database"]["role"] == f"nakama_{PROJECT}_1"
    # Bob is no member: as if there were no project.
    for args in (("show",), ("create",), ("rotate",), ("delete", "--yes")):
        refused = bob("projects", "database", *args, PROJECT)
        assert refused.returncode != 0 and "not found" in refused.stderr, refused.stderr

    rotated = alice("projects", "database", "rotate", PROJECT)
    assert rotated.returncode == 0, rotated.stderr
    assert f"role    nakama_{PROJECT}_2" in rotated.stdout and "rotated" in rotated.stdout
    assert roles_and_databases(addon_server, PROJECT) == [
        f"nakama_{PROJECT}",
        f"nakama_{PROJECT}_2",
        f"nakama_{PROJECT}",
    ]

    # A wrong name typed back drops nothing.
    kept = alice("projects", "database", "delete", PROJECT, input="db-ap\n")
    assert kept.returncode != 0 and "nothing deleted" in kept.stderr
    assert len(roles_and_databases(addon_server, PROJECT)) == 3
    dropped = alice("projects", "database", "delete", PROJECT, input=PROJECT + "\n")
    assert dropped.returncode == 0, dropped.stderr
    assert roles_and_databases(addon_server, PROJECT) == []

    # Neither the admin password nor any app password reached the log or an answer.
    log = server.log_path.read_text(errors="replace")
    assert ADMIN_PASSWORD not in log and "SCRAM" not in log
    for out in (made, rotated, dropped):
        assert "postgresql://" not in out.stdout + out.stderr
