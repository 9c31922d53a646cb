"""GitLabForge through the real python-gitlab client against the stateful GitLab fake.

The fake keeps real bare repositories, so commits, compares and file reads are real git, and it
delivers push hooks to a stand-in receiver the way GitLab does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gitlab
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from backend.cluster.gitlab_forge import GitLabForge
from nakama.access import GITLAB_ACCESS_LEVEL, Role
from nakama.clients.gitlab import GitLabClient
from nakama.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.planning import ZERO_SHA
from nakama.settings import DEFAULT_DEPENDENCY_FILES, GitLabSettings
from tests.support import free_port, serve

if TYPE_CHECKING:
    from tests.fakes.gitlab import GitLabFake

# The gitlab_fake fixture (until tests/conftest.py registers the module for every test).
pytest_plugins = ["tests.fakes.gitlab"]

HOOK_TOKEN = "hook-secret-" + "h" * 20
MAX_ATTEMPTS = 3
FILES = {
    "app.py": b"import streamlit as st\nst.write('hi')\n",
    "requirements.txt": b"streamlit==1.35.0\n",
    "pages/about.py": b"print('about')\n",
}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A stand-in for Nakama's webhook receiver: records every request, answers ``status``."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    app = FastAPI()

    @app.post("/nakama/{name}/{project}")
    async def hook(name: str, project: str, request: Request) -> Response:
        state.seen.append(Seen(f"/{name}", dict(request.headers), await request.json()))
        return Response(status_code=state.status)

    with serve(app) as url:
        state.base_url = f"{url}/nakama"
        yield state


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(fake: GitLabFake, sleeps: list[float], **overrides: Any) -> GitLabClient:
    values: dict[str, Any] = {
        "url": fake.url,
        "token": SecretStr(fake.token),
        "group": fake.group,
        "max_attempts": MAX_ATTEMPTS,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return GitLabClient(GitLabSettings(**values), sleep=sleeps.append)


@pytest.fixture
def client(gitlab_fake: GitLabFake, sleeps: list[float]) -> Iterator[GitLabClient]:
    client = make_client(gitlab_fake, sleeps)
    yield client
    client.close()


@pytest.fixture
def forge(client: GitLabClient, receiver: Receiver) -> GitLabForge:
    return GitLabForge(client, hook_base_url=receiver.base_url)


@pytest.fixture
def demo(forge: GitLabForge) -> str:
    """The project "demo", created from FILES; its first commit."""
    return forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def clone(fake: GitLabFake, tmp_path: Path, project: str = "demo") -> Path:
    work = tmp_path / f"work-{project}"
    git("clone", "-q", fake.git_url(project), str(work), cwd=tmp_path)
    return work


def commit(work: Path, changes: dict[str, str | None], message: str) -> str:
    """Apply ``changes`` (None deletes, "mv:<old>" renames) and commit; the new sha."""
    for path, content in changes.items():
        if content is None:
            git("rm", "-q", path, cwd=work)
        elif content.startswith("mv:"):
            git("mv", content[3:], path, cwd=work)
        else:
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def error_chain(exc: BaseException) -> str:
    parts = []
    current: BaseException | None = exc
    while current is not None:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --- create ----------------------------------------------------------------------------------
def test_create_makes_one_commit_and_two_push_hooks(
    gitlab_fake: GitLabFake,
    forge: GitLabForge,
    client: GitLabClient,
    receiver: Receiver,
    demo: str,
) -> None:
    project = gitlab_fake.project("demo")
    assert (project.full_path, project.visibility, project.default_branch) == (
        "nakama-apps/demo",
        "private",
        "main",
    )
    assert len(gitlab_fake.requests_to("POST", "/repository/commits")) == 1
    repo = project.repo
    assert git("rev-list", "--all", cwd=repo).split() == [demo]
    assert sorted(git("ls-tree", "-r", "--name-only", demo, cwd=repo).split()) == sorted(FILES)
    for path, content in FILES.items():
        assert git("show", f"{demo}:{path}", cwd=repo) == content.decode().rstrip("\n")
    assert forge.head("demo", "main") == demo
    assert forge.head("demo", "nope") is None
    assert forge.clone_url("demo") == f"{gitlab_fake.url}/nakama-apps/demo.git"

    hooks = gitlab_fake.hooks("demo")
    assert [h.url for h in hooks] == [
        f"{receiver.base_url}/build-image/demo",
        f"{receiver.base_url}/code-reload/demo",
    ]
    for hook in hooks:
        assert hook.token == HOOK_TOKEN
        assert (hook.push_events, hook.branch_filter, hook.enable_ssl_verification) == (
            True,
            "main",
            True,
        )
        assert not hook.flags.get("tag_push_events")
    # The API never gives the token back.
    listed = client.api.projects.get("nakama-apps/demo", lazy=True).hooks.list(get_all=True)
    assert len(listed) == 2
    assert all("token" not in h.attributes for h in listed)
    assert HOOK_TOKEN not in str([h.attributes for h in listed])
    assert [h.delivering for h in forge.hooks_status("demo")] == [True, True]
    # The starter-kit commit came before the hooks existed: nothing was delivered.
    gitlab_fake.wait_for_deliveries()
    assert receiver.seen == []


def test_create_twice_is_a_conflict(forge: GitLabForge, demo: str) -> None:
    with pytest.raises(Conflict):
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    assert forge.head("demo", "main") == demo


def test_a_failed_create_leaves_no_project(
    gitlab_fake: GitLabFake, forge: GitLabForge, sleeps: list[float]
) -> None:
    gitlab_fake.fail_next(500, MAX_ATTEMPTS, method="POST", path="/hooks")
    with pytest.raises(TemporaryError):
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    assert gitlab_fake.find_project("nakama-apps/demo") is None
    assert len(sleeps) == MAX_ATTEMPTS - 1


def test_add_maintainer_is_idempotent_and_never_lowers(
    gitlab_fake: GitLabFake, forge: GitLabForge, demo: str
) -> None:
    gitlab_fake.add_user("alice")
    bob = gitlab_fake.add_user("bob")
    gitlab_fake.project("demo").members[bob.id] = 30  # a developer already
    forge.add_maintainer("demo", "alice")
    forge.add_maintainer("demo", "alice")  # 409 Member already exists: fine
    forge.add_maintainer("demo", "bob")
    assert gitlab_fake.members("demo") == {"alice": 40, "bob": 40}
    with pytest.raises(InvalidInput, match="no GitLab user named 'nobody'"):
        forge.add_maintainer("demo", "nobody")
    with pytest.raises(InvalidInput):
        forge.check_maintainer("nobody")
    forge.check_maintainer("alice")


def member_writes(fake: GitLabFake) -> int:
    return sum(len(fake.requests_to(m, "/members")) for m in ("POST", "PUT", "DELETE"))


@pytest.mark.parametrize("before", [None, 10, 30, 40, 50])
@pytest.mark.parametrize("role", list(Role))
def test_member_access_follows_the_nakama_role_and_is_idempotent(
    gitlab_fake: GitLabFake, forge: GitLabForge, demo: str, before: int | None, role: Role
) -> None:
    carol = gitlab_fake.add_user("carol")
    if before is not None:
        gitlab_fake.project("demo").members[carol.id] = before
    level = GITLAB_ACCESS_LEVEL[role]
    forge.set_member_access("demo", "carol", level)
    expected = {} if level is None else {"carol": level}
    assert gitlab_fake.members("demo") == expected
    writes = member_writes(gitlab_fake)
    assert writes == (0 if before == level else 1)  # one add, edit or delete; none if it is so
    forge.set_member_access("demo", "Carol", level)  # again (usernames ignore case): no write
    assert member_writes(gitlab_fake) == writes
    assert gitlab_fake.members("demo") == expected


def test_member_access_refuses_unknown_users_levels_and_projects(
    gitlab_fake: GitLabFake, forge: GitLabForge, demo: str
) -> None:
    gitlab_fake.add_user("dave")
    for level in (40, None):
        with pytest.raises(InvalidInput, match="no GitLab user named 'nobody'"):
            forge.set_member_access("demo", "nobody", level)
    for level in (0, 5, 60):
        with pytest.raises(InvalidInput, match=f"access level {level} is not a project role"):
            forge.set_member_access("demo", "dave", level)
    with pytest.raises(NotFound):
        forge.set_member_access("missing", "dave", 30)
    with pytest.raises(NotFound):
        forge.set_member_access("missing", "dave", None)
    assert member_writes(gitlab_fake) == 0
    assert gitlab_fake.members("demo") == {}


def test_member_access_sets_the_level_of_a_member_added_meanwhile(
    gitlab_fake: GitLabFake, forge: GitLabForge, demo: str
) -> None:
    erin = gitlab_fake.add_user("erin")
    gitlab_fake.project("demo").members[erin.id] = 20
    # Our look finds no member (as if another writer added erin just after it): the add is
    # refused with 409 Member already exists, and the level is set on the member found then.
    gitlab_fake.fail_next(404, method="GET", path="/members/")
    forge.set_member_access("demo", "erin", 30)
    assert gitlab_fake.members("demo") == {"erin": 30}
    assert len(gitlab_fake.requests_to("POST", "/members")) == 1
    assert len(gitlab_fake.requests_to("PUT", "/members/")) == 1


def test_the_fake_answers_project_members_as_gitlab_does(
    gitlab_fake: GitLabFake, client: GitLabClient, demo: str
) -> None:
    """The calls python-gitlab makes for members, against what GitLab answers them."""
    frank = gitlab_fake.add_user("frank")
    members = client.api.projects.get("nakama-apps/demo", lazy=True).members
    with pytest.raises(gitlab.GitlabGetError) as absent:
        members.get(frank.id)
    assert absent.value.response_code == 404
    with pytest.raises(gitlab.GitlabCreateError) as unknown:
        members.create({"user_id": 9999, "access_level": 30})
    assert unknown.value.response_code == 404
    for level in (0, 5, 35, 60):
        with pytest.raises(gitlab.GitlabCreateError) as refused:
            members.create({"user_id": frank.id, "access_level": level})
        assert refused.value.response_code == 400
    created = members.create({"user_id": frank.id, "access_level": 30})
    assert (created.username, created.access_level) == ("frank", 30)
    with pytest.raises(gitlab.GitlabCreateError) as twice:
        members.create({"user_id": frank.id, "access_level": 30})
    assert twice.value.response_code == 409
    member = members.get(frank.id)
    member.access_level = 60
    with pytest.raises(gitlab.GitlabUpdateError) as too_high:
        member.save()
    assert too_high.value.response_code == 400
    member.access_level = 40
    member.save()
    assert members.get(frank.id).access_level == 40
    members.delete(frank.id)
    assert gitlab_fake.members("demo") == {}
    with pytest.raises(gitlab.GitlabDeleteError) as gone:
        members.delete(frank.id)
    assert gone.value.response_code == 404
    with pytest.raises(gitlab.GitlabUpdateError) as not_member:
        members.update(frank.id, {"access_level": 30})
    assert not_member.value.response_code == 404


# --- push hooks ------------------------------------------------------------------------------
def test_git_push_fires_push_hooks_with_gitlab_headers(
    gitlab_fake: GitLabFake, receiver: Receiver, demo: str, tmp_path: Path
) -> None:
    work = clone(gitlab_fake, tmp_path)
    after = commit(work, {"app.py": "print('v2')\n"}, "Second version")
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    gitlab_fake.wait_for_deliveries()

    assert sorted(s.path for s in receiver.seen) == ["/build-image", "/code-reload"]
    keys = {s.headers["idempotency-key"] for s in receiver.seen}
    events = {s.headers["x-gitlab-event-uuid"] for s in receiver.seen}
    assert len(keys) == 2 and len(events) == 1
    for seen in receiver.seen:
        assert seen.headers["x-gitlab-event"] == "Push Hook"
        assert seen.headers["x-gitlab-token"] == HOOK_TOKEN
        assert seen.headers["user-agent"].startswith("GitLab/")
        assert seen.headers["x-gitlab-instance"] == gitlab_fake.url
        body = seen.body
        assert (body["object_kind"], body["ref"], body["before"], body["after"]) == (
            "push",
            "refs/heads/main",
            demo,
            after,
        )
        assert body["project"]["path_with_namespace"] == "nakama-apps/demo"
        assert [c["id"] for c in body["commits"]] == [after]
        assert body["commits"][0]["modified"] == ["app.py"]

    # Another branch does not pass the hooks' branch filter.
    git("push", "-q", "origin", "HEAD:feature", cwd=work)
    gitlab_fake.wait_for_deliveries()
    assert len(receiver.seen) == 2


def test_a_commit_through_the_api_fires_push_hooks_too(
    gitlab_fake: GitLabFake, client: GitLabClient, receiver: Receiver, demo: str
) -> None:
    project = client.api.projects.get("nakama-apps/demo", lazy=True)
    made = project.commits.create(
        {
            "branch": "main",
            "commit_message": "Edit",
            "actions": [{"action": "update", "file_path": "app.py", "content": "x = 1\n"}],
        }
    )
    gitlab_fake.wait_for_deliveries()
    assert {(s.body["before"], s.body["after"]) for s in receiver.seen} == {(demo, made.id)}


def test_failing_hooks_get_disabled_and_hooks_status_says_so(
    gitlab_fake: GitLabFake,
    client: GitLabClient,
    forge: GitLabForge,
    receiver: Receiver,
    demo: str,
) -> None:
    receiver.status = 500
    project = client.api.projects.get("nakama-apps/demo", lazy=True)
    for n in range(4):  # GitLab disables a hook at its 4th failure in a row
        project.commits.create(
            {
                "branch": "main",
                "commit_message": f"c{n}",
                "actions": [{"action": "update", "file_path": "app.py", "content": f"{n}\n"}],
            }
        )
    gitlab_fake.wait_for_deliveries()
    statuses = forge.hooks_status("demo")
    assert [s.alert_status for s in statuses] == ["temporarily_disabled"] * 2
    assert all(not s.delivering for s in statuses)
    now = datetime.now(UTC)
    assert all(s.disabled_until and s.disabled_until > now for s in statuses)


# --- compare and files -----------------------------------------------------------------------
def test_changed_paths_after_two_commits_and_after_a_force_push(
    gitlab_fake: GitLabFake,
    forge: GitLabForge,
    client: GitLabClient,
    demo: str,
    tmp_path: Path,
) -> None:
    work = clone(gitlab_fake, tmp_path)
    commit(work, {"requirements.txt": "streamlit==1.36.0\n"}, "Bump streamlit")
    after = commit(work, {"data/new.csv": "a,b\n", "pages/info.py": "mv:pages/about.py"}, "Move")
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    assert forge.changed_paths("demo", demo, after) == [
        "data/new.csv",
        "pages/about.py",
        "pages/info.py",
        "requirements.txt",
    ]
    assert gitlab_fake.requests_to("GET", "/repository/compare")[-1].query["straight"] == "True"

    # Drop both commits and push something else instead: GitLab refuses force pushes to the
    # protected default branch unless a Maintainer allows them (or the deploy branch is
    # another, unprotected one).
    git("reset", "-q", "--hard", demo, cwd=work)
    forced = commit(work, {"app.py": "print('rewritten')\n"}, "Rewrite")
    refused = subprocess.run(
        ["git", "push", "-q", "--force", "origin", "HEAD:main"],
        cwd=work, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "not allowed to force push code to a protected branch" in refused.stderr
    gitlab_fake.project("demo").allow_force_push = True
    git("reset", "-q", "--hard", demo, cwd=work)
    forced = commit(work, {"app.py": "print('rewritten')\n"}, "Rewrite")
    git("push", "-q", "--force", "origin", "HEAD:main", cwd=work)
    assert forge.head("demo", "main") == forced
    # The deployed tree (after) differs from the new one in the dropped changes as well.
    assert forge.changed_paths("demo", after, forced) == [
        "app.py",
        "data/new.csv",
        "pages/about.py",
        "pages/info.py",
        "requirements.txt",
    ]
    # GitLab's default merge-base compare would have missed them.
    merge_base = client.api.projects.get("nakama-apps/demo", lazy=True).repository_compare(
        after, forced
    )
    assert [d["new_path"] for d in merge_base["diffs"]] == ["app.py"]


def test_changed_paths_is_none_when_unknown(forge: GitLabForge, demo: str) -> None:
    assert forge.changed_paths("demo", ZERO_SHA, demo) is None
    assert forge.changed_paths("demo", demo, ZERO_SHA) is None
    assert forge.changed_paths("demo", "ab" * 20, demo) is None
    assert forge.changed_paths("demo", demo, demo) == []
    with pytest.raises(NotFound):
        forge.changed_paths("ghost", demo, demo)


def test_read_files_lists_the_tree_and_reads_only_dependency_files(
    gitlab_fake: GitLabFake, forge: GitLabForge
) -> None:
    files = {
        **FILES,
        "requirements-dev.txt": b"pytest\n",
        "pyproject.toml": b"[project]\nname = 'x'\n",
        "sub/requirements.txt": b"not at the top\n",
        **{f"data/f{i:03}.txt": b"%d\n" % i for i in range(150)},
    }
    sha = forge.create_repository("big", files=files, branch="main", hook_token=HOOK_TOKEN)
    assert forge.read_files("big", sha, DEFAULT_DEPENDENCY_FILES) == {
        "requirements.txt": files["requirements.txt"],
        "requirements-dev.txt": files["requirements-dev.txt"],
        "pyproject.toml": files["pyproject.toml"],
    }
    assert len(gitlab_fake.requests_to("GET", "/repository/tree")) >= 2  # paginated
    assert len(gitlab_fake.requests_to("GET", "/raw")) == 3
    with pytest.raises(NotFound):
        forge.read_files("big", "ab" * 20, DEFAULT_DEPENDENCY_FILES)


def test_delete_is_idempotent(gitlab_fake: GitLabFake, forge: GitLabForge, demo: str) -> None:
    repo = gitlab_fake.project("demo").repo
    forge.delete_repository("demo")
    assert gitlab_fake.find_project("nakama-apps/demo") is None
    assert not repo.exists()
    forge.delete_repository("demo")
    with pytest.raises(NotFound):
        forge.head("demo", "main")


# --- error paths -----------------------------------------------------------------------------
def test_429_waits_as_retry_after_says(
    gitlab_fake: GitLabFake, forge: GitLabForge, sleeps: list[float], demo: str
) -> None:
    gitlab_fake.fail_next(429, retry_after=7)
    assert forge.head("demo", "main") == demo
    gitlab_fake.fail_next(429, retry_after=3600)  # capped
    gitlab_fake.fail_next(
        429, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    )
    assert forge.head("demo", "main") == demo
    assert sleeps[:2] == [7.0, 60.0]
    assert 20.0 < sleeps[2] <= 30.0


def test_5xx_until_the_last_attempt_is_a_temporary_error(
    gitlab_fake: GitLabFake, forge: GitLabForge, sleeps: list[float], demo: str
) -> None:
    gitlab_fake.fail_next(502, 1)
    assert forge.head("demo", "main") == demo
    assert sleeps == [0.5]
    sleeps.clear()
    gitlab_fake.fail_next(503, MAX_ATTEMPTS)
    with pytest.raises(TemporaryError) as caught:
        forge.head("demo", "main")
    assert sleeps == [0.5, 1.0]
    assert "503" in str(caught.value)
    assert gitlab_fake.token not in error_chain(caught.value)


def test_a_wrong_token_is_unauthorized_and_not_retried(
    gitlab_fake: GitLabFake, receiver: Receiver, sleeps: list[float]
) -> None:
    wrong = "glpat-wrong-token-" + "w" * 12
    client = make_client(gitlab_fake, sleeps, token=SecretStr(wrong))
    forge = GitLabForge(client, hook_base_url=receiver.base_url)
    with pytest.raises(Unauthorized) as caught:
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
    client.close()
    assert sleeps == []
    assert wrong not in error_chain(caught.value)


def test_an_unreachable_gitlab_is_a_temporary_error(
    gitlab_fake: GitLabFake, receiver: Receiver, sleeps: list[float]
) -> None:
    client = make_client(gitlab_fake, sleeps, url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TemporaryError) as caught:
        GitLabForge(client, hook_base_url=receiver.base_url).head("demo", "main")
    client.close()
    assert len(sleeps) == MAX_ATTEMPTS - 1
    assert gitlab_fake.token not in error_chain(caught.value)


# --- the fake's pipeline side, which the GitLab pipelines adapter uses ---------------------------
def test_fake_records_triggered_pipelines(gitlab_fake: GitLabFake, client: GitLabClient) -> None:
    project = client.api.projects.get("nakama/pipelines", lazy=True)
    variables = {"NAKAMA_KIND": "build", "NAKAMA_PROJECT": "demo", "NAKAMA_COMMIT": "a" * 40}
    started = project.trigger_pipeline("main", gitlab_fake.trigger_token, variables=variables)
    assert (started.source, started.status, started.ref) == ("trigger", "pending", "main")
    [recorded] = gitlab_fake.triggered("nakama/pipelines")
    assert recorded.variables == variables
    assert [j.name for j in recorded.jobs] == ["build-image"]

    gitlab_fake.set_pipeline_status(recorded.id, "failed", trace="buildah: no space left\n")
    assert project.pipelines.get(recorded.id).status == "failed"
    [job] = project.pipelines.get(recorded.id, lazy=True).jobs.list(get_all=True)
    assert project.jobs.get(job.id, lazy=True).trace() == b"buildah: no space left\n"

    with pytest.raises(gitlab.GitlabCreateError) as bad:
        project.trigger_pipeline("main", gitlab_fake.trigger_token, variables={"N": 1})
    assert bad.value.response_code == 400
    with pytest.raises(PermanentError, match="key-valued strings"):
        client.call(
            lambda: project.trigger_pipeline(
                "main", gitlab_fake.trigger_token, variables={"N": True}
            ),
            what="trigger",
        )
    url = f"{gitlab_fake.api_url}/projects/nakama%2Fpipelines/trigger/pipeline"
    loop = httpx.post(
        url,
        json={"token": gitlab_fake.trigger_token, "ref": "main"},
        headers={"X-Gitlab-Event": "Pipeline Hook"},
    )
    assert loop.status_code == 403
    wrong = httpx.post(url, json={"token": "nope", "ref": "main"})
    assert wrong.status_code == 404
    assert len(gitlab_fake.triggered()) == 1
