"""The sharing commands (`nakama projects share|unshare|members|visibility|sleep`) as scripts use
them: the installed `nakama` console script in a subprocess against a real `nakama up`, with two
users the admin made. Refusals come back in the server's words with the documented exit code."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, write_tiny_kit
from tests.e2e.test_cli import NAKAMA, cli_env


class Run(Protocol):
    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("cli-sharing")
    kit = write_tiny_kit(root / "kit")
    nakama = NakamaProcess(data_dir=root / "data", starter_kit=kit, uv_cache=uv_cache)
    nakama.start()
    yield nakama
    nakama.close()
    nakama.kill_apps()


def runner(server: NakamaProcess, config_dir: Path, token: str) -> Run:
    env = cli_env(config_dir, NAKAMA_URL=server.url, NAKAMA_TOKEN=token)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([NAKAMA, *args], env=env, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture(scope="module")
def admin(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return runner(server, tmp_path_factory.mktemp("admin-cfg"), ADMIN_TOKEN)


@pytest.fixture(scope="module")
def users(admin: Run, server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """alice and bob, made by the admin with `nakama users create`, each with their own CLI."""
    made: dict[str, Run] = {}
    for username in ("alice", "bob"):
        out = admin("users", "create", username, "--json")
        assert out.returncode == 0, out.stderr
        token = json.loads(out.stdout)["token"]
        made[username] = runner(server, tmp_path_factory.mktemp(f"{username}-cfg"), token)
    return made


@pytest.fixture(scope="module")
def alice(users: dict[str, Run]) -> Run:
    return users["alice"]


@pytest.fixture(scope="module")
def bob(users: dict[str, Run]) -> Run:
    return users["bob"]


@pytest.fixture(scope="module")
def project(alice: Run) -> str:
    """A project alice created, and so owns, once its app runs."""
    out = alice("projects", "create", "shared-app", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["role"] == "owner"
    return "shared-app"


def members_of(server: NakamaProcess, name: str) -> dict[str, str]:
    r = server.api.get(f"/api/v1/projects/{name}/members")
    assert r.status_code == 200, r.text
    return {m["username"]: m["role"] for m in r.json()}


def test_share_then_unshare_gives_and_takes_access(
    server: NakamaProcess, alice: Run, bob: Run, project: str
) -> None:
    hidden = bob("projects", "show", project)
    assert hidden.returncode == 3, hidden.stderr
    assert f"not found: project {project!r} not found" in hidden.stderr
    assert project not in bob("projects", "list").stdout

    shared = alice("projects", "share", project, "bob")  # a viewer unless told otherwise
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == f"bob is now viewer of {project}"
    assert members_of(server, project) == {"alice": "owner", "bob": "viewer"}
    seen = bob("projects", "show", project, "--json")
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["role"] == "viewer"
    assert project in bob("projects", "list").stdout

    promoted = alice("projects", "share", project, "bob", "--role", "developer", "--json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout) == {"username": "bob", "role": "developer"}
    assert bob("pipelines", project).returncode == 0  # a developer's

    gone = alice("projects", "unshare", project, "bob")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip() == f"bob no longer has access to {project}"
    assert members_of(server, project) == {"alice": "owner"}
    assert bob("projects", "show", project).returncode == 3
    again = alice("projects", "unshare", project, "bob")
    assert again.returncode == 3
    assert f"'bob' is not a member of project {project!r}" in again.stderr


def test_members_table_and_json_match_the_api(
    server: NakamaProcess, alice: Run, bob: Run, admin: Run, project: str
) -> None:
    assert admin("projects", "share", project, "bob", "--role", "viewer").returncode == 0
    try:
        as_json = bob("projects", "members", project, "--json")  # any member may list them
        assert as_json.returncode == 0, as_json.stderr
        assert (
            json.loads(as_json.stdout)
            == server.api.get(f"/api/v1/projects/{project}/members").json()
        )
        table = alice("projects", "members", project)
        assert table.returncode == 0, table.stderr
        header, *rows = [line.split() for line in table.stdout.splitlines() if line.strip()]
        assert header == ["username", "role"]
        assert rows == [["alice", "owner"], ["bob", "viewer"]]
    finally:
        assert alice("projects", "unshare", project, "bob").returncode == 0
    assert bob("projects", "members", project).returncode == 3  # no longer a member


def test_a_role_too_low_is_refused_in_the_servers_words(
    server: NakamaProcess, alice: Run, bob: Run, project: str
) -> None:
    assert alice("projects", "share", project, "bob").returncode == 0
    try:
        for args, needs in (
            (("projects", "visibility", project, "public"), "owner"),
            (("projects", "sleep", project, "--after", "5"), "owner"),
            (("projects", "share", project, "bob", "--role", "owner"), "owner"),
            (("projects", "unshare", project, "alice"), "owner"),
            (("pipelines", project), "developer"),
            (("logs", project), "developer"),
        ):
            out = bob(*args)
            assert out.returncode == 4, (args, out.stderr)
            message = " ".join(out.stderr.split())
            assert message.startswith("error: you do not have access to "), args
            assert (
                f"your role in project {project!r} is viewer; this needs {needs} or higher"
            ) in message, args
            assert "nakama login" not in out.stderr  # signed in fine: the role is the matter
        after = server.project(project)
        assert (after["visibility"], after["idle_timeout_s"]) == ("private", None)
        assert members_of(server, project) == {"alice": "owner", "bob": "viewer"}
    finally:
        assert alice("projects", "unshare", project, "bob").returncode == 0


def test_the_last_owner_stays_and_mistakes_are_told(
    server: NakamaProcess, alice: Run, admin: Run, project: str
) -> None:
    for args in (
        ("projects", "unshare", project, "alice"),
        ("projects", "share", project, "alice", "--role", "developer"),
    ):
        out = alice(*args)
        assert out.returncode == 5, (args, out.stderr)
        assert f"conflict: project {project!r} needs an owner" in out.stderr
    assert members_of(server, project) == {"alice": "owner"}

    nobody = alice("projects", "share", project, "nobody")
    assert nobody.returncode == 3
    assert "not found: user 'nobody' not found" in nobody.stderr
    assert alice("projects", "members", "no-such-project").returncode == 3
    assert alice("projects", "share", project, "bob", "--role", "admin").returncode == 2
    assert alice("projects", "visibility", project, "secret").returncode == 2
    assert alice("projects", "sleep", project).returncode == 2  # --after is required
    assert alice("projects", "sleep", project, "--after", "-1").returncode == 2
    assert members_of(server, project) == {"alice": "owner"}

    # with a second owner, the first may step down; an admin, owner of all, restores her
    assert alice("projects", "share", project, "bob", "--role", "owner").returncode == 0
    down = alice("projects", "share", project, "alice", "--role", "developer")
    assert down.returncode == 0, down.stderr
    assert members_of(server, project) == {"alice": "developer", "bob": "owner"}
    assert admin("projects", "share", project, "alice", "--role", "owner").returncode == 0
    assert admin("projects", "unshare", project, "bob").returncode == 0
    assert members_of(server, project) == {"alice": "owner"}


def test_visibility_and_sleep_round_trip(server: NakamaProcess, alice: Run, project: str) -> None:
    public = alice("projects", "visibility", project, "public")
    assert public.returncode == 0, public.stderr
    assert public.stdout.strip() == f"{project}: public (anyone, no sign-in may open its app)"
    assert server.project(project)["visibility"] == "public"
    internal = alice("projects", "visibility", project, "internal", "--json")
    assert internal.returncode == 0, internal.stderr
    answer = json.loads(internal.stdout)
    assert answer["visibility"] == "internal"
    assert answer == server.project(project) | {"app_state": answer["app_state"]}
    assert alice("projects", "visibility", project, "private").returncode == 0
    assert server.project(project)["visibility"] == "private"

    asleep = alice("projects", "sleep", project, "--after", "15")
    assert asleep.returncode == 0, asleep.stderr
    assert asleep.stdout.strip() == f"{project}: sleeps after 15 minutes without a request"
    assert server.project(project)["idle_timeout_s"] == 900
    shown = alice("projects", "show", project)
    assert re.search(r"sleeps after\s+15 min", shown.stdout), shown.stdout
    assert re.search(r"visibility\s+private", shown.stdout), shown.stdout
    never = alice("projects", "sleep", project, "--after", "0", "--json")
    assert never.returncode == 0, never.stderr
    assert json.loads(never.stdout)["idle_timeout_s"] is None
    assert server.project(project)["idle_timeout_s"] is None
    assert alice("projects", "sleep", project, "--after", "0").stdout.strip() == (
        f"{project}: never sleeps"
    )
