"""A push hook body always fits the receiver's limit (review M8): file lists go first, then
long messages, then the commits; the receiver's fields stay and what went is marked."""

from __future__ import annotations

import json

import pytest

from backend.local.post_receive import project_url
from backend.local.push_payload import (
    DEFAULT_MAX_BODY_BYTES,
    SHORT_MESSAGE,
    CommitInfo,
    ProjectInfo,
    Pusher,
    build_push_payload,
    encode_within,
)
from nakama.models import PushEvent
from nakama.settings import ReceiverSettings

PROJECT = ProjectInfo(
    id=7,
    name="flight",
    namespace="local",
    web_url="http://127.0.0.1:8000/projects/flight",
    git_http_url="http://127.0.0.1:8000/git/flight.git",
    default_branch="main",
)
A, B = "a" * 40, "b" * 40
DATA = tuple(
    f"data_files/sample_data_file_with_a_fairly_long_name_{i:05}.csv" for i in range(20_000)
)


def push(*commits: CommitInfo) -> dict[str, object]:
    return build_push_payload(
        project=PROJECT,
        pusher=Pusher(name="alice"),
        ref="refs/heads/main",
        before=A,
        after=B,
        commits=commits,
    )


def commit(n: int, *, message: str = "change\n", **changes: tuple[str, ...]) -> CommitInfo:
    return CommitInfo(f"{n:040x}", message, "2024-05-26T10:00:00+02:00", "Ann", "a@x", **changes)


def test_the_default_is_the_receivers() -> None:
    assert ReceiverSettings().max_body_bytes == DEFAULT_MAX_BODY_BYTES


def test_a_small_push_is_sent_whole() -> None:
    payload = push(commit(1, modified=("app.py",)))
    body, omitted = encode_within(payload, max_bytes=DEFAULT_MAX_BODY_BYTES)
    assert omitted == () and json.loads(body) == payload


def test_a_push_of_twenty_thousand_files_goes_without_its_file_lists() -> None:
    payload = push(commit(1, added=DATA), commit(2, modified=("server.py",)))
    assert len(json.dumps(payload)) > DEFAULT_MAX_BODY_BYTES
    body, omitted = encode_within(payload, max_bytes=DEFAULT_MAX_BODY_BYTES)
    assert len(body) <= DEFAULT_MAX_BODY_BYTES
    assert omitted == ("commits.added/modified/removed",)
    sent = json.loads(body)
    assert sent["nakama"]["omitted"] == list(omitted)
    assert [c["added"] + c["modified"] for c in sent["commits"]] == [[], []]
    assert [c["message"] for c in sent["commits"]] == ["change\n", "change\n"]
    event = PushEvent.model_validate(sent)
    assert (event.before, event.after, event.ref) == (A, B, "refs/heads/main")
    assert event.project.path_with_namespace == "local/flight"


@pytest.mark.parametrize(
    ("message", "limit", "omitted"),
    [
        ("m" * 60_000, 400_000, ("commits.added/modified/removed", "commits.message")),
        ("m" * 60_000, 8_000, ("commits.added/modified/removed", "commits.message", "commits")),
    ],
)
def test_then_messages_are_cut_and_then_the_commits_left_out(
    message: str, limit: int, omitted: tuple[str, ...]
) -> None:
    payload = push(*(commit(i, message=message, added=DATA[:50]) for i in range(20)))
    body, left_out = encode_within(payload, max_bytes=limit)
    assert left_out == omitted and len(body) <= limit
    sent = json.loads(body)
    assert sent["total_commits_count"] == 20
    if "commits" in omitted:
        assert sent["commits"] == []
    else:
        assert {len(c["message"]) for c in sent["commits"]} == {SHORT_MESSAGE}
    PushEvent.model_validate(sent)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/build-image", "http://127.0.0.1:8000/build-image/flight"),
        ("http://h/base/code-reload/", "http://h/base/code-reload/flight"),
        ("http://h/build-image/flight", "http://h/build-image/flight"),
        ("http://h/other", "http://h/other"),
    ],
)
def test_old_hook_urls_get_the_project(url: str, expected: str) -> None:
    assert project_url(url, "flight") == expected


@pytest.mark.parametrize(
    ("url", "ours"),
    [
        ("https://nakama.example.com/build-image/flight", True),
        ("https://nakama.example.com/code-reload/flight/", True),
        ("https://nakama.example.com/build-image", True),  # a hook made before
        ("https://nakama.example.com/build-image/other", False),
        ("https://ci.example.com/hook", False),
    ],
)
def test_cluster_mode_knows_its_hooks_old_and_new(url: str, ours: bool) -> None:
    from backend.cluster.gitlab_forge import is_receiver_hook

    assert is_receiver_hook(url, "flight") is ours
