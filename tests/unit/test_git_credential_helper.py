"""The credential helper's decisions: what git's request says, and whether it is answered."""

from __future__ import annotations

import shlex

import pytest

from nakama_cli.auth import GitCredential, answer, git_token_name, helper_command, parse_request

STORED = GitCredential(
    url="http://127.0.0.1:8000", username="alice", token="nkm_x", token_id=7, name="git@box"
)
UNDER_PATH = GitCredential(
    url="https://nakama.example.com/team", username="bob", token="nkm_y", token_id=8, name="git@b"
)
YES_ALICE = "username=alice\npassword=nkm_x\n"


def test_parse_request_stops_at_the_blank_line() -> None:
    text = "protocol=http\nhost=h:1\nwwwauth[]=Basic realm=x\nnonsense\n\nhost=later\n"
    assert parse_request(text) == {
        "protocol": "http",
        "host": "h:1",
        "wwwauth[]": "Basic realm=x",
    }
    assert parse_request("") == {}


@pytest.mark.parametrize(
    ("request_text", "stored", "expected"),
    [
        ("protocol=http\nhost=127.0.0.1:8000\n", STORED, YES_ALICE),
        ("protocol=http\nhost=127.0.0.1:8000\npath=git/app.git\n", STORED, YES_ALICE),
        ("protocol=http\nhost=127.0.0.1:8000\nusername=alice\n", STORED, YES_ALICE),
        ("protocol=HTTP\nhost=127.0.0.1:8000\n", STORED, YES_ALICE),
        ("protocol=https\nhost=127.0.0.1:8000\n", STORED, ""),
        ("protocol=http\nhost=127.0.0.1:8001\n", STORED, ""),
        ("protocol=http\nhost=127.0.0.1\n", STORED, ""),
        ("protocol=http\nhost=gitlab.example.com\n", STORED, ""),
        ("protocol=http\nhost=127.0.0.1:8000\nusername=nakama\n", STORED, ""),
        ("host=127.0.0.1:8000\n", STORED, ""),
        ("protocol=http\nhost=127.0.0.1:8000\n", None, ""),
        # A server under a path: git's path (sent with useHttpPath) must be under it.
        ("protocol=https\nhost=nakama.example.com\n", UNDER_PATH, "username=bob\npassword=nkm_y\n"),
        (
            "protocol=https\nhost=nakama.example.com:443\npath=team/git/a.git\n",
            UNDER_PATH,
            "username=bob\npassword=nkm_y\n",
        ),
        ("protocol=https\nhost=nakama.example.com\npath=other/git/a.git\n", UNDER_PATH, ""),
        ("protocol=https\nhost=nakama.example.com\npath=teamx/git/a.git\n", UNDER_PATH, ""),
    ],
)
def test_answer(request_text: str, stored: GitCredential | None, expected: str) -> None:
    assert answer(parse_request(request_text), stored) == expected


def test_helper_command_is_a_shell_command_git_completes() -> None:
    assert helper_command("/usr/bin/nakama", None) == "!/usr/bin/nakama auth git-credential"
    command = helper_command("/opt/my tools/nakama", "/home/a b/cfg")
    assert command.startswith("!")
    assert shlex.split(command[1:] + " get") == [
        "/opt/my tools/nakama",
        "auth",
        "git-credential",
        "--config-dir",
        "/home/a b/cfg",
        "get",
    ]


def test_git_token_name() -> None:
    assert git_token_name("laptop") == "git@laptop"
    assert git_token_name("") == "git@localhost"
    assert len(git_token_name("x" * 200)) == 100
