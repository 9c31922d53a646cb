"""The pure parts of signing in with GitLab: local usernames for GitLab users, and what a
callback or GitLab's ``/api/v4/user`` answer means."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pytest

from backend.web.gitlab_signin import (
    BAD_CALLBACK,
    DENIED,
    NOT_ACTIVE,
    UNREACHABLE,
    SignInFailed,
    callback_problem,
    gitlab_identity,
)
from nakama.auth import GitLabIdentity, usernames_for_gitlab, validate_username


@pytest.mark.parametrize(
    ("gitlab", "first", "third"),
    [
        ("jsmith", "jsmith", "jsmith-3"),
        ("JSmith", "jsmith", "jsmith-3"),
        ("j.smith", "j-smith", "j-smith-3"),
        ("j..smith_", "j-smith_", "j-smith_-3"),
        ("-dash-", "dash", "dash-3"),
        ("42bob", "gl-42bob", "gl-42bob-3"),
        ("_bot", "gl-_bot", "gl-_bot-3"),
        ("ÉLodie", "lodie", "lodie-3"),
        ("...", "gitlab-user", "gitlab-user-3"),
        ("a" * 50, "a" * 40, "a" * 38 + "-3"),
        ("a" * 38 + ".b", "a" * 38 + "-b", "a" * 38 + "-3"),
    ],
)
def test_usernames_for_gitlab_follow_our_rules(gitlab: str, first: str, third: str) -> None:
    names = list(islice(usernames_for_gitlab(gitlab), 12))
    assert names[0] == first
    assert names[2] == third
    assert len(set(names)) == len(names)
    for name in names:
        assert validate_username(name) == name


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"error": "access_denied", "state": "s"}, 401, DENIED),
        (
            {"error": "invalid_scope", "state": "s"},
            400,
            "GitLab refused the sign-in (invalid_scope).",
        ),
        ({"error": "<script>", "state": "s"}, 400, "GitLab refused the sign-in (unknown)."),
        ({"state": "s"}, 400, BAD_CALLBACK),
        ({"code": "c"}, 400, BAD_CALLBACK),
    ],
)
def test_callback_problems(params: dict[str, str], status: int, message: str) -> None:
    problem = callback_problem(params)
    assert problem is not None
    assert (problem.status, problem.message) == (status, message)


def test_a_callback_with_code_and_state_goes_on() -> None:
    assert callback_problem({"code": "c", "state": "s"}) is None


def test_an_active_user_gives_its_id_username_and_age() -> None:
    answer = {"id": 7, "username": "JSmith", "state": "active"}
    assert gitlab_identity(answer) == GitLabIdentity(id=7, username="JSmith")
    made = gitlab_identity({**answer, "created_at": "2012-05-23T08:00:58.000Z"}).created_at
    assert made == datetime(2012, 5, 23, 8, 0, 58, tzinfo=UTC)
    for unreadable in ("yesterday", "2012-05-23T08:00:58", 1337750458):  # no zone: unknown
        assert gitlab_identity({**answer, "created_at": unreadable}).created_at is None


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        ({"username": "jsmith", "state": "blocked"}, 401, NOT_ACTIVE),
        ({"username": "jsmith", "state": "deactivated"}, 401, NOT_ACTIVE),
        ({"username": "jsmith"}, 401, NOT_ACTIVE),
        ({"username": "", "state": "active"}, 503, UNREACHABLE),
        ({"state": "active"}, 503, UNREACHABLE),
        ({"username": "jsmith", "state": "active"}, 503, UNREACHABLE),  # no id: cannot link
        ({"id": "7", "username": "jsmith", "state": "active"}, 503, UNREACHABLE),
        ({"id": True, "username": "jsmith", "state": "active"}, 503, UNREACHABLE),
        ({"id": 0, "username": "jsmith", "state": "active"}, 503, UNREACHABLE),
        (["jsmith"], 503, UNREACHABLE),
    ],
)
def test_other_user_answers_are_refused(answer: Any, status: int, message: str) -> None:
    with pytest.raises(SignInFailed) as failed:
        gitlab_identity(answer)
    assert (failed.value.status, failed.value.message) == (status, message)
