"""The local forge's Push Hook bodies and headers match GitLab's, field for field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from backend.local.post_receive import random_uuid
from backend.local.push_payload import (
    MAX_COMMITS,
    CommitInfo,
    ProjectInfo,
    Pusher,
    build_push_payload,
    classify_changes,
    commit_title,
    delivery_headers,
    parse_git_log,
    parse_push_options,
)
from nakama.planning import ZERO_SHA
from tests.conftest import load_reference

PROJECT = ProjectInfo(
    id=7,
    name="flight",
    namespace="local",
    web_url="http://127.0.0.1:8000/projects/flight",
    git_http_url="http://127.0.0.1:8000/git/flight.git",
    default_branch="main",
)
PUSHER = Pusher(name="nakama")
TOKEN = "t0k" + "-" * 4
A, B, T = "a" * 40, "b" * 40, "c" * 40


def commit(n: int, **changes: tuple[str, ...]) -> CommitInfo:
    return CommitInfo(
        sha=f"{n:040x}",
        message=f"change {n}\n\nbody\n",
        timestamp="2024-05-26T10:00:00+02:00",
        author_name="Ann",
        author_email="ann@example.com",
        **changes,
    )


def payload(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "project": PROJECT,
        "pusher": PUSHER,
        "ref": "refs/heads/main",
        "before": A,
        "after": B,
        "commits": [commit(1)],
    }
    args.update(kwargs)
    return build_push_payload(**args)


def keys(data: dict[str, Any]) -> dict[str, Any]:
    """The key structure: nested objects by their keys, lists by their first element's."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = keys(value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out[key] = [keys(value[0])]
        else:
            out[key] = None
    return out


@pytest.mark.parametrize(
    ("reference", "kwargs"),
    [
        ("push_hook_event_log_example.json", {}),
        ("push_hook_branch_create.json", {"before": ZERO_SHA}),
        ("push_hook_branch_delete.json", {"after": ZERO_SHA}),
    ],
)
def test_key_sets_match_gitlab(reference: str, kwargs: dict[str, Any]) -> None:
    expected = load_reference(reference)
    expected = expected.get("request_data", expected)
    ours = payload(**kwargs)
    if kwargs.get("after") == ZERO_SHA:
        assert ours["commits"] == expected["commits"] == []
        expected = {k: v for k, v in expected.items() if k != "commits"}
        ours = {k: v for k, v in ours.items() if k != "commits"}
    assert keys(ours) == keys(expected)


def test_documented_push_hook_keys_are_all_present() -> None:
    documented = keys(load_reference("push_hook.json"))
    ours = keys(payload())
    # The documented example predates `message`, `push_options` and `project.ci_config_path`.
    assert set(documented) <= set(ours)
    assert set(documented["project"]) <= set(ours["project"])
    assert documented["repository"] == ours["repository"]
    assert documented["commits"] == ours["commits"]


def test_tag_push_keys_match_gitlab() -> None:
    expected = keys(load_reference("tag_push_hook.json"))
    ours = keys(payload(ref="refs/tags/v1.0.0", before=ZERO_SHA, commits=[], checkout_sha=T))
    assert set(expected) <= set(ours)
    assert expected["repository"] == ours["repository"]


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "normal push",
        {"commits": [commit(1), commit(2)]},
        {
            "object_kind": "push",
            "event_name": "push",
            "checkout_sha": B,
            "total_commits_count": 2,
            "ids": [f"{1:040x}", f"{2:040x}"],
            "message": None,
        },
    ),
    (
        "more than 20 commits: the newest 20, oldest first",
        {"commits": [commit(n) for n in range(1, 31)], "total_commits_count": 30},
        {"total_commits_count": 30, "ids": [f"{n:040x}" for n in range(11, 31)]},
    ),
    (
        "branch create",
        {"before": ZERO_SHA, "ref": "refs/heads/feature/login"},
        {"before": ZERO_SHA, "checkout_sha": B, "total_commits_count": 1, "ids": [f"{1:040x}"]},
    ),
    (
        "branch delete",
        {"after": ZERO_SHA, "total_commits_count": 5},
        {"after": ZERO_SHA, "checkout_sha": None, "total_commits_count": 0, "ids": []},
    ),
    (
        "tag push",
        {
            "ref": "refs/tags/v1.0.0",
            "before": ZERO_SHA,
            "commits": [],
            "checkout_sha": T,
            "tag_message": "Release 1.0\n",
        },
        {
            "object_kind": "tag_push",
            "event_name": "tag_push",
            "checkout_sha": T,
            "message": "Release 1.0\n",
            "total_commits_count": 0,
            "ids": [],
        },
    ),
    (
        "tag delete",
        {"ref": "refs/tags/v1.0.0", "after": ZERO_SHA, "commits": []},
        {"object_kind": "tag_push", "checkout_sha": None, "ids": []},
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_payload(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    body = payload(**kwargs)
    ids = expected.pop("ids")
    assert [c["id"] for c in body["commits"]] == ids
    assert len(body["commits"]) <= MAX_COMMITS
    for key, value in expected.items():
        assert body[key] == value, key
    assert body["project_id"] == body["project"]["id"] == 7
    assert body["project"]["path_with_namespace"] == "local/flight"
    assert body["ref_protected"] is False


def test_commit_fields() -> None:
    body = payload(commits=[commit(1, added=("new.py",), modified=("app.py",), removed=("x",))])
    assert body["commits"] == [
        {
            "id": f"{1:040x}",
            "message": "change 1\n\nbody\n",
            "title": "change 1",
            "timestamp": "2024-05-26T10:00:00+02:00",
            "url": f"http://127.0.0.1:8000/projects/flight/-/commit/{1:040x}",
            "author": {"name": "Ann", "email": "ann@example.com"},
            "added": ["new.py"],
            "modified": ["app.py"],
            "removed": ["x"],
        }
    ]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([("A", ["new.py"])], (("new.py",), (), ())),
        ([("M", ["app.py"]), ("T", ["link"])], ((), ("app.py", "link"), ())),
        ([("D", ["gone.py"])], ((), (), ("gone.py",))),
        ([("R", ["old.py", "new.py"])], (("new.py",), (), ())),  # rename: new path, added only
        ([("C", ["a.py", "b.py"])], (("b.py",), (), ())),
    ],
)
def test_classify_changes(entries: list[tuple[str, list[str]]], expected: tuple[Any, ...]) -> None:
    assert classify_changes(entries) == expected


def test_parse_git_log() -> None:
    raw = (
        f"{B}\x1f2024-05-26T10:00:00+00:00\x1fAnn\x1fann@example.com\x1fsecond\n\0"
        "\nR100\0a\0a2\0M\0b c\0A\0new\nline\0"
        f"{A}\x1f2024-05-25T10:00:00+00:00\x1fBob\x1fbob@example.com\x1fempty\n\0"
        f"\n{T}\x1f2024-05-24T10:00:00+00:00\x1fBob\x1fbob@example.com\x1ffirst\n\nbody\n\0"
        "\nA\0a\0A\0b c\0"
    ).encode()
    commits = parse_git_log(raw)
    assert [c.sha for c in commits] == [B, A, T]
    assert commits[0].added == ("a2", "new\nline")
    assert commits[0].modified == ("b c",)
    assert commits[0].removed == ()
    assert commits[1].added == commits[1].modified == commits[1].removed == ()
    assert commits[2].message == "first\n\nbody\n"
    assert commits[2].author_name == "Bob"
    assert commits[2].added == ("a", "b c")


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("fix\n\nbody", "fix"),
        ("\n\nleading blank lines\n", "leading blank lines"),
        ("x" * 99, "x" * 99),
        ("word " * 30, ("word " * 16).rstrip() + "…"),
    ],
)
def test_commit_title(message: str, title: str) -> None:
    assert commit_title(message) == title


def test_push_options() -> None:
    assert parse_push_options(["ci.skip", "ci.variable=A=1", "ci.variable=B=2", "junk"]) == {
        "ci": {"skip": True, "variable": ["A=1", "B=2"]}
    }


def test_delivery_headers() -> None:
    event = random_uuid()
    body = payload()

    def headers(url: str, key: str) -> dict[str, str]:
        return delivery_headers(
            body,
            url=url,
            token=TOKEN,
            instance="http://127.0.0.1:8000",
            event_uuid=event,
            webhook_uuid=random_uuid(),
            idempotency_key=key,
            version="1.2.3",
        )

    first, second = headers("http://x/build-image", "k1"), headers("http://x/code-reload", "k2")
    reference = load_reference("request_headers_example.json")
    assert set(first) == set(reference)
    assert first["X-Gitlab-Event"] == "Push Hook"
    assert first["User-Agent"] == "Nakama/1.2.3"
    assert first["X-Gitlab-Token"] == TOKEN
    assert first["X-Gitlab-Event-UUID"] == second["X-Gitlab-Event-UUID"] == event
    assert first["X-Gitlab-Webhook-UUID"] != second["X-Gitlab-Webhook-UUID"]
    assert (first["Idempotency-Key"], second["Idempotency-Key"]) == ("k1", "k2")
    tag = delivery_headers(
        payload(ref="refs/tags/v1", commits=[]),
        url="u",
        token=TOKEN,
        instance="i",
        event_uuid=event,
        webhook_uuid=random_uuid(),
        idempotency_key="k",
        version="1",
    )
    assert tag["X-Gitlab-Event"] == "Tag Push Hook"


def test_random_uuid_is_a_version_4_uuid_as_the_uuid_module_writes_it() -> None:
    made = {random_uuid() for _ in range(1000)}
    assert len(made) == 1000
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text
