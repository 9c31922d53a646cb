"""`nakama projects limits` as scripts use it: the installed `nakama` console script in a
subprocess against a real `nakama up`. alice owns the project, bob is a developer there and
carol no member; only the admin may change limits. Refusals come back in the server's words with
the documented exit code, and every change is checked against what the server's GET says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, write_tiny_kit
from tests.e2e.test_cli_sharing import Run, runner

P = "limited-app"
EVERY_OPTION = (
    "--memory-mib",
    "512",
    "--cpu",
    "0.5",
    "--processes",
    "128",
    "--disk-mib",
    "1024",
    "--log-mib",
    "20",
    "--replicas",
    "2",
    "--autoscale-max",
    "4",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("cli-limits")
    kit = write_tiny_kit(root / "kit")
    nakama = NakamaProcess(data_dir=root / "data", starter_kit=kit, uv_cache=uv_cache)
    nakama.start()
    yield nakama
    nakama.close()
    nakama.kill_apps()


@pytest.fixture(scope="module")
def admin(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return runner(server, tmp_path_factory.mktemp("admin-cfg"), ADMIN_TOKEN)


@pytest.fixture(scope="module")
def users(
    admin: Run, server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """alice (who makes the project, so owns it), bob (a developer there) and carol (no
    member), made by the admin, each with their own CLI; the project's app runs."""
    made: dict[str, Run] = {}
    for username in ("alice", "bob", "carol"):
        out = admin("users", "create", username, "--json")
        assert out.returncode == 0, out.stderr
        token = json.loads(out.stdout)["token"]
        made[username] = runner(server, tmp_path_factory.mktemp(f"{username}-cfg"), token)
    created = made["alice"]("projects", "create", P, "--json")
    assert created.returncode == 0, created.stderr
    shared = made["alice"]("projects", "share", P, "bob", "--role", "developer")
    assert shared.returncode == 0, shared.stderr
    [first] = server.pipelines(P)
    server.wait_deployed(P, first["commit"])
    return made


@pytest.fixture
def defaults(server: NakamaProcess) -> Iterator[None]:
    """The test starts and ends with no override (the admin resets what it changed)."""
    assert server.api.delete(f"/api/v1/projects/{P}/limits").status_code == 200
    yield
    assert server.api.delete(f"/api/v1/projects/{P}/limits").status_code == 200


def limits_of(server: NakamaProcess) -> dict[str, Any]:
    r = server.api.get(f"/api/v1/projects/{P}/limits")
    assert r.status_code == 200, r.text
    return dict(r.json())


def overrides_of(server: NakamaProcess) -> dict[str, Any]:
    return dict(limits_of(server)["overrides"])


def shown(stdout: str) -> dict[str, str]:
    """The table `limits` prints: label -> the rest of its line."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        label, _, rest = line.strip().partition("  ")
        rows[label] = rest.strip()
    return rows


def test_a_developer_sees_the_limits_and_how_they_are_enforced(
    server: NakamaProcess, users: dict[str, Run], defaults: None
) -> None:
    out = users["bob"]("projects", "limits", P)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"limits of {P}"
    rows = shown(out.stdout)
    answer = limits_of(server)
    assert re.fullmatch(r"1 GiB\s+default", rows["memory"]), rows
    assert re.fullmatch(r"1 core\s+default", rows["CPU"]), rows
    assert re.fullmatch(r"256\s+default", rows["processes"]), rows
    assert re.fullmatch(r"[\d.]+ [MG]iB of 2 GiB\s+default", rows["disk ($DATA_DIR)"]), rows
    assert re.fullmatch(r"10 MiB\s+default", rows["log kept"]), rows
    assert re.fullmatch(r"1\s+default", rows["replicas (cluster mode)"]), rows
    assert re.fullmatch(r"off\s+default", rows["autoscaler (cluster mode)"]), rows
    assert rows["enforced by"] == answer["enforced_by"]
    assert answer["data_bytes"] is not None  # the app runs: its $DATA_DIR is measured

    as_json = users["bob"]("projects", "limits", P, "--json")
    assert as_json.returncode == 0, as_json.stderr
    got = json.loads(as_json.stdout)
    assert {k: got[k] for k in ("limits", "overrides", "enforced_by")} == {
        k: answer[k] for k in ("limits", "overrides", "enforced_by")
    }
    assert got["limits"]["memory_mib"] == 1024 and got["overrides"] == {}


def test_only_an_admin_may_change_them(
    server: NakamaProcess, users: dict[str, Run], defaults: None
) -> None:
    for who in ("bob", "alice"):  # a developer; an owner, who is not an admin either
        for args in (("--memory-mib", "512"), ("--unset", "cpu"), ("--reset",)):
            out = users[who]("projects", "limits", P, *args)
            assert out.returncode == 4, (who, args, out.stderr)
            refused = f"you do not have access to the limits of project {P!r}"
            message = " ".join(out.stderr.split())
            assert f"{refused}: only an admin may do this" in message, (who, args)
            assert "nakama login" not in out.stderr  # signed in fine: being no admin is
    assert overrides_of(server) == {}


def test_a_non_member_is_told_the_project_is_not_there(
    server: NakamaProcess, users: dict[str, Run], defaults: None
) -> None:
    for args in ((), ("--json",), ("--memory-mib", "512"), ("--reset",)):
        out = users["carol"]("projects", "limits", P, *args)
        assert out.returncode == 3, (args, out.stderr)
        assert f"not found: project {P!r} not found" in out.stderr, args
        assert out.stdout == ""
    missing = users["carol"]("projects", "limits", "no-such-project")
    assert missing.returncode == 3
    assert overrides_of(server) == {}


def test_the_admin_sets_merges_unsets_and_resets(
    server: NakamaProcess, admin: Run, users: dict[str, Run], defaults: None
) -> None:
    out = admin("projects", "limits", P, "--memory-mib", "512", "--cpu", "0.5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"{P}: limits changed; the app restarts with them"
    rows = shown(out.stdout.split("\n", 1)[1])
    assert re.fullmatch(r"512 MiB\s+override", rows["memory"]), rows
    assert re.fullmatch(r"0.5 cores\s+override", rows["CPU"]), rows
    assert re.fullmatch(r"256\s+default", rows["processes"]), rows
    assert overrides_of(server) == {"memory_mib": 512, "cpu": 0.5}

    # the server replaces all overrides at once: the CLI keeps those it was not told about
    more = admin("projects", "limits", P, "--processes", "128", "--json")
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["overrides"] == {"memory_mib": 512, "cpu": 0.5, "processes": 128}
    assert overrides_of(server) == {"memory_mib": 512, "cpu": 0.5, "processes": 128}
    fewer = admin("projects", "limits", P, "--unset", "cpu", "--unset", "memory_mib")
    assert fewer.returncode == 0, fewer.stderr
    assert overrides_of(server) == {"processes": 128}
    assert limits_of(server)["limits"]["cpu"] == 1.0  # the default again

    every = admin("projects", "limits", P, *EVERY_OPTION)
    assert every.returncode == 0, every.stderr
    assert overrides_of(server) == {
        "memory_mib": 512,
        "cpu": 0.5,
        "processes": 128,
        "disk_mib": 1024,
        "log_mib": 20,
        "replicas": 2,
        "autoscale_max": 4,
    }
    rows = shown(users["bob"]("projects", "limits", P).stdout)  # the developer sees it too
    assert re.fullmatch(r"[\d.]+ [MG]iB of 1 GiB\s+override", rows["disk ($DATA_DIR)"]), rows
    assert re.fullmatch(r"2 to 4 pods at 80% CPU\s+override", rows["autoscaler (cluster mode)"]), (
        rows
    )

    reset = admin("projects", "limits", P, "--reset")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.splitlines()[0] == f"{P}: back to the defaults; the app restarts with them"
    assert overrides_of(server) == {}
    assert limits_of(server)["limits"]["memory_mib"] == 1024


def test_invalid_limits_are_refused_in_the_servers_words(
    server: NakamaProcess, admin: Run, defaults: None
) -> None:
    for args, said in (
        (("--memory-mib", "1"), "body.memory_mib: Input should be greater than or equal to 32"),
        (("--cpu", "0"), "body.cpu: Input should be greater than 0"),
        (("--processes", "2"), "body.processes: Input should be greater than or equal to 8"),
        (
            ("--replicas", "3", "--autoscale-max", "2"),
            "autoscale_max must be at least replicas",
        ),
    ):
        out = admin("projects", "limits", P, *args)
        assert out.returncode == 6, (args, out.stderr)
        assert out.stderr.startswith("error: invalid: "), out.stderr
        assert said in out.stderr.replace("\n", " "), (args, out.stderr)
    assert overrides_of(server) == {}

    # an override set earlier counts too: the merged set is what the server checks
    assert admin("projects", "limits", P, "--replicas", "3").returncode == 0
    late = admin("projects", "limits", P, "--autoscale-max", "2")
    assert late.returncode == 6, late.stderr
    assert "autoscale_max must be at least replicas" in late.stderr
    assert overrides_of(server) == {"replicas": 3}

    # mistakes of the command line itself are usage errors, before anything is sent
    usage: tuple[tuple[str, ...], ...] = (
        ("--unset", "colour"),
        ("--reset", "--cpu", "2"),
        ("--cpu", "2", "--unset", "cpu"),
        ("--memory-mib", "lots"),
    )
    for wrong in usage:
        out = admin("projects", "limits", P, *wrong)
        assert out.returncode == 2, (wrong, out.stderr)
    assert overrides_of(server) == {"replicas": 3}
