"""``nakama cluster setup --push-robot-file``: the push robot's name and secret written as the
File variable the build job reads, in a form GitLab's variable expansion leaves alone; and a
Harbor whose ``robot_name_prefix`` is not the default."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from image_builder.build import registry_credentials
from nakama.clients.harbor import parse_robot_file
from tests.integration.test_cluster_setup import run, secret_lines, writes
from tests.integration.test_harbor_client import PASSWORD, PROJECT, URL, USER, FakeHarbor
from tests.unit.test_ci_templates import gitlab_expand


def _harbor(monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[FakeHarbor]:
    for name in [n for n in os.environ if n.startswith("NAKAMA_")]:
        monkeypatch.delenv(name)
    env = {"URL": URL, "USERNAME": USER, "PASSWORD": PASSWORD, "PROJECT": PROJECT,
           "MAX_ATTEMPTS": "3", "ROBOT_NAME_PREFIX": prefix}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(f"NAKAMA_HARBOR__{key}", value)
    fake = FakeHarbor(robot_prefix=prefix)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        yield fake


@pytest.fixture
def harbor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHarbor]:
    yield from _harbor(monkeypatch, "robot$")


@pytest.fixture
def harbor_with_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHarbor]:
    yield from _harbor(monkeypatch, "robot_")


def test_the_push_robot_file_survives_gitlab_expansion_and_names_the_user(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "push-robot.json"
    code, out, err = run(capsys, "--push-robot-file", str(target))
    assert (code, err) == (0, "")
    push = f"robot${PROJECT}+push"
    secret = secret_lines(out)[push]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    content = target.read_text()
    assert "$" not in content  # nothing for GitLab to expand
    assert gitlab_expand(content, {"nakama": "oops"}) == content
    assert parse_robot_file(content) == (push, secret)
    # The build job takes user and secret from it, whatever the username variable became.
    assert registry_credentials(None, target) == (push, secret)
    assert registry_credentials("robot-apps+push", target) == (push, secret)
    # Only the push robot's secret went into the file.
    pull_secret = secret_lines(out)[f"robot${PROJECT}+pull"]
    assert pull_secret not in content and secret in content


def test_an_existing_robot_file_is_not_overwritten_and_nothing_is_done(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "push-robot.json"
    target.write_text("kept\n")
    code, _, err = run(capsys, "--push-robot-file", str(target))
    assert code == 2 and "exists already" in err
    assert target.read_text() == "kept\n"
    assert writes(harbor) == []


def test_a_rotation_writes_the_new_secret(
    harbor: FakeHarbor, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys)[0] == 0
    target = tmp_path / "rotated.json"
    code, out, _ = run(capsys, "--rotate-robots", "--push-robot-file", str(target))
    assert code == 0
    push = f"robot${PROJECT}+push"
    assert parse_robot_file(target.read_text()) == (push, secret_lines(out)[push])


def test_a_non_default_robot_prefix(
    harbor_with_prefix: FakeHarbor, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "push-robot.json"
    code, out, _ = run(capsys, "--push-robot-file", str(target))
    assert code == 0
    push = f"robot_{PROJECT}+push"
    assert parse_robot_file(target.read_text()) == (push, secret_lines(out)[push])
    # A second run finds both robots by their prefixed names and creates none.
    robots = [c for c in writes(harbor_with_prefix) if c[1].endswith("/robots")]
    code, out, _ = run(capsys)
    assert code == 0 and f"push robot {push}: exists, left alone" in out
    assert [c for c in writes(harbor_with_prefix) if c[1].endswith("/robots")] == robots
    # A plain name with a custom prefix is not mistaken for an expanded robot name.
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert registry_credentials(push, secret) == (push, "s3cret")
