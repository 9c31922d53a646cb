"""``nakama cluster setup`` against the stateful Harbor fake of test_harbor_client.py."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import respx
from typer.testing import CliRunner

from nakama_cli.cluster_setup import setup_main
from nakama_cli.main import app as cli_app
from tests.integration.test_harbor_client import API, PASSWORD, PROJECT, URL, USER, FakeHarbor

ATTEMPTS = 3
PULL = f"robot${PROJECT}+pull"
PUSH = f"robot${PROJECT}+push"


@pytest.fixture
def harbor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHarbor]:
    for name in [n for n in os.environ if n.startswith("NAKAMA_")]:
        monkeypatch.delenv(name)
    env = {
        "URL": URL,
        "USERNAME": USER,
        "PASSWORD": PASSWORD,
        "PROJECT": PROJECT,
        "KEEP_BUILDS": "7",
        "MAX_ATTEMPTS": str(ATTEMPTS),
    }
    for key, value in env.items():
        monkeypatch.setenv(f"NAKAMA_HARBOR__{key}", value)
    fake = FakeHarbor()
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    sleeps: list[float] = []
    code = setup_main(list(argv), sleep=sleeps.append)
    out, err = capsys.readouterr()
    return code, out, err


def writes(harbor: FakeHarbor) -> list[tuple[str, str, int | str]]:
    return [call for call in harbor.calls if call[0] in ("POST", "PUT", "PATCH", "DELETE")]


def secret_lines(out: str) -> dict[str, str]:
    """robot name -> the secret printed right after it."""
    return dict(re.findall(r"name:\s+(\S+)\n\s+secret:\s+(\S+)", out))


def assert_no_credentials(*texts: str) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for text in texts:
        for spelling in (PASSWORD, json.dumps(PASSWORD)[1:-1], quote(PASSWORD, safe=""), token):
            assert spelling not in text


def test_first_run_creates_everything_and_prints_each_secret_once(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys)

    assert (code, err) == (0, "")
    assert list(harbor.projects) == [PROJECT]
    assert harbor.projects[PROJECT]["metadata"]["public"] == "false"
    (policy,) = harbor.retentions.values()
    assert policy["rules"][0]["params"] == {"latestPushedK": 7}
    robots = {robot["name"]: robot_id for robot_id, robot in harbor.robots.items()}
    assert set(robots) == {PULL, PUSH}
    # the pull robot reads only; the push robot may push
    bodies = {b["name"]: b for d, b in harbor.bodies if d == "RobotCreate"}
    pull_actions = {a["action"] for a in bodies["pull"]["permissions"][0]["access"]}
    assert "push" not in pull_actions
    assert "push" in {a["action"] for a in bodies["push"]["permissions"][0]["access"]}

    printed = secret_lines(out)
    assert printed == {name: harbor.robot_secrets[robots[name]] for name in (PULL, PUSH)}
    for secret in printed.values():
        assert out.count(secret) == 1
    assert "harbor-pull" in out and "NAKAMA_REGISTRY_PASSWORD_FILE" in out
    assert f"project {PROJECT}: created" in out
    assert "keeps the 7 newest builds" in out
    assert_no_credentials(out, err)


def test_second_run_changes_nothing_and_prints_no_secret(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys)[0] == 0
    state = json.dumps([harbor.projects, harbor.robots, harbor.robot_secrets, harbor.retentions])
    before = len(harbor.calls)

    code, out, err = run(capsys)

    assert (code, err) == (0, "")
    again = harbor.calls[before:]
    assert not [c for c in again if c[0] in ("POST", "PATCH", "DELETE")]
    assert [c[0] for c in again if c[0] == "PUT"] == ["PUT"]  # the same retention policy
    after = [harbor.projects, harbor.robots, harbor.robot_secrets, harbor.retentions]
    assert json.dumps(after) == state
    assert secret_lines(out) == {}
    for secret in harbor.robot_secrets.values():
        assert secret not in out
    assert f"project {PROJECT}: exists" in out
    assert f"{PULL}: exists" in out and f"{PUSH}: exists" in out


def test_rotate_robots_prints_new_secrets(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    first = secret_lines(run(capsys)[1])

    code, out, err = run(capsys, "--rotate-robots")

    assert (code, err) == (0, "")
    rotated = secret_lines(out)
    assert set(rotated) == {PULL, PUSH}
    robots = {robot["name"]: robot_id for robot_id, robot in harbor.robots.items()}
    for name, secret in rotated.items():
        assert secret != first[name]
        assert harbor.robot_secrets[robots[name]] == secret
    assert len(harbor.robots) == 2
    assert [c[0] for c in writes(harbor)].count("POST") == 4  # all from the first run
    assert_no_credentials(out, err)


def test_harbor_unreachable_fails_in_one_line_without_credentials(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    harbor.fail(httpx.ConnectError, times=ATTEMPTS)

    code, out, err = run(capsys)

    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "ConnectError" in err and f"gave up after {ATTEMPTS} attempts" in err
    assert not re.search(r"(?i)basic\s+\S{8,}", err)
    assert_no_credentials(out, err)
    assert harbor.projects == {}


def test_a_500_echoing_the_credentials_does_not_leak_them(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        message = f"failed for {USER} password={PASSWORD} ({auth})"
        return httpx.Response(500, json={"errors": [{"code": "INTERNAL", "message": message}]})

    harbor.fail(echo, times=ATTEMPTS)

    code, out, err = run(capsys)

    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert_no_credentials(out, err)


def test_wrong_password_says_which_settings_to_check(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAKAMA_HARBOR__PASSWORD", "Wrong-Passw0rd")

    code, out, err = run(capsys)

    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "NAKAMA_HARBOR__USERNAME" in err and "NAKAMA_HARBOR__PASSWORD" in err
    assert "Wrong-Passw0rd" not in out + err
    assert not re.search(r"(?i)basic\s+\S{8,}", err)
    assert writes(harbor) == []


def test_an_exists_robot_whose_creation_answer_was_lost_can_be_rotated(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    harbor.fail(httpx.Response(502), when="after", method="POST", path="/robots")

    code, out, _ = run(capsys)

    assert code == 0
    assert f"{PULL}: exists" in out and "--rotate-robots" in out  # its secret was never seen
    assert set(secret_lines(out)) == {PUSH}
    assert set(secret_lines(run(capsys, "--rotate-robots")[1])) == {PULL, PUSH}


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        ({"NAKAMA_HARBOR__PASSWORD": ""}, [], "NAKAMA_HARBOR__PASSWORD is not set"),
        ({"NAKAMA_HARBOR__KEEP_BUILDS": "0"}, [], "NAKAMA_HARBOR__KEEP_BUILDS"),
        ({"NAKAMA_HARBOR__KEEP_BUILDS": "many"}, [], "keep_builds"),
        ({}, ["--no-such-option"], "unrecognized arguments"),
    ],
    ids=["no-password", "keep-0", "keep-not-int", "unknown-option"],
)
def test_bad_settings_or_arguments_exit_2_before_calling_harbor(
    harbor: FakeHarbor,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    argv: list[str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code, out, err = run(capsys, *argv)

    assert code == 2
    assert expected in err
    assert harbor.calls == []
    assert_no_credentials(out, err)


def test_the_cli_passes_arguments_through(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str]
) -> None:
    result = CliRunner().invoke(cli_app, ["cluster", "setup", "--rotate-robots"])
    assert result.exit_code == 0, result.output
    assert set(secret_lines(result.output)) == {PULL, PUSH}
    assert str(harbor.requests[0].url).startswith(API)
