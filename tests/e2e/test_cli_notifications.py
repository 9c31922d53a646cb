"""`nakama notifications list|add|remove` with the installed console script against a real
`nakama up` (targets on loopback allowed by the operator), alice's project, bob beside her. The
URL goes in on stdin, never on the command line; the signing secret is printed once; a failed
build of alice's reaches her target signed with it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    clone,
    git,
    git_push,
    wait_for,
)
from tests.e2e.two_users import Run, alice_and_bob_with_a_project, tiny_server
from tests.integration.test_notifications import BROKEN, Receiver, receiver  # noqa: F401

PROJECT = "notify-app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("cli-notifications")
    yield from tiny_server(
        root,
        uv_cache,
        {
            "NAKAMA_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS": "true",
            "NAKAMA_NOTIFICATIONS__INTERVAL_S": "0.2",
        },
    )


@pytest.fixture(scope="module")
def users(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return alice_and_bob_with_a_project(server, tmp_path_factory, PROJECT)


def test_add_list_remove_and_a_failed_build_is_told(
    server: NakamaProcess,
    users: dict[str, Run],
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = users["alice"], users["bob"]
    url = receiver.url + "/deploys/secret-path"
    made = alice("notifications", "add", PROJECT, "--json", input=url + "\n")
    assert made.returncode == 0, made.stderr
    target = json.loads(made.stdout)
    assert target["kind"] == "webhook" and target["secret"]
    assert "secret-path" not in made.stdout

    listed = alice("notifications", "list", PROJECT)
    assert listed.returncode == 0, listed.stderr
    assert receiver.url in listed.stdout and "secret-path" not in listed.stdout
    # Bob is no member: as if the project did not exist; he cannot add either.
    assert bob("notifications", "list", PROJECT).returncode != 0
    assert bob("notifications", "add", PROJECT, input=receiver.url + "/bob\n").returncode != 0

    # A build that fails: alice's target hears of it, signed with the secret she was shown.
    work = clone(server, PROJECT, tmp_path / "work")
    (work / "requirements.txt").write_text(BROKEN)
    git("commit", "-qam", "a broken requirement", cwd=work)
    git_push(work)
    wait_for(lambda: receiver.got, timeout=120, what="the failure notification")
    [got] = receiver.got
    expected = "sha256=" + hmac.new(target["secret"].encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Nakama-Signature"] == expected
    assert got.json()["event"] == "pipeline.failed"
    log = server.log_path.read_text(errors="replace")
    assert "secret-path" not in log and target["secret"] not in log

    removed = alice("notifications", "remove", PROJECT, str(target["id"]))
    assert removed.returncode == 0, removed.stderr
    assert "no notification targets" in alice("notifications", "list", PROJECT).stderr
