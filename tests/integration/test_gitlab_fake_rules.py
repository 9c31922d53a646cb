"""The GitLab fake refuses what GitLab refuses, driven by the real python-gitlab client.

Each test shows one rule of ``tests/fakes/gitlab_rules.py`` (where the GitLab source or document
behind it is quoted): tokens as principals, the URL blocker for hooks, the pipeline-variables
restriction and CI rules, ``default_branch`` of an empty project, delayed deletion, compare
limits, inherited memberships and the protected default branch. A second user is always there,
to show what they can and cannot reach.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gitlab
import pytest
from gitlab.exceptions import GitlabError

from tests.fakes.gitlab import ADMIN_TOKEN, TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.gitlab_rules import DEVELOPER, MAINTAINER, OWNER, REPORTER
from tests.support import free_port, serve

BUILD = {"NAKAMA_KIND": "build", "NAKAMA_PROJECT": "demo"}


@contextmanager
def fake_gitlab(tmp_path: Path, **options: Any) -> Iterator[GitLabFake]:
    with GitLabFake(tmp_path / "gitlab", **options).serving() as fake:
        yield fake


def api(fake: GitLabFake, token: str = TOKEN) -> gitlab.Gitlab:
    return gitlab.Gitlab(fake.url, private_token=token, retry_transient_errors=False)


def failure(call: Any) -> GitlabError:
    with pytest.raises(GitlabError) as caught:
        call()
    return caught.value


def body(exc: GitlabError) -> Any:
    return json.loads(exc.response_body or b"null")


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, check=check, capture_output=True, text=True)


def demo(fake: GitLabFake) -> Any:
    return fake.create_project("nakama-apps/demo", files={"app.py": b"print(1)\n"})


# --- 1. tokens are principals with scopes and memberships -----------------------------------------
def test_a_token_reaches_only_what_its_user_is_a_member_of(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        demo(fake)
        bob = fake.add_user("bob")
        bob_token = fake.add_personal_token(bob)
        assert api(fake).projects.get("nakama-apps/demo").path == "demo"  # Nakama: Owner
        # bob is no member: the private project and group do not exist for him.
        missing = failure(lambda: api(fake, bob_token).projects.get("nakama-apps/demo"))
        assert (missing.response_code, body(missing)) == (404, {"message": "404 Project Not Found"})
        assert failure(lambda: api(fake, bob_token).groups.get("nakama-apps")).response_code == 404
        # As a Reporter he sees it, but may not add a hook (Maintainer).
        fake.set_membership("nakama-apps/demo", bob, REPORTER)
        project = api(fake, bob_token).projects.get("nakama-apps/demo")
        hook = failure(lambda: project.hooks.create({"url": "https://hooks.example.org/x"}))
        assert hook.response_code == 403
        # The administrator sees everything.
        assert api(fake, ADMIN_TOKEN).projects.get("nakama-apps/demo").id == project.id


def test_a_group_token_bot_has_one_membership_only(tmp_path: Path) -> None:
    """What docs/cluster-install.md used to ask for: the apps group's token made a member of the
    GitOps project. GitLab refuses, and without it the bot does not see the project."""
    with fake_gitlab(tmp_path, layout="apps-group-token") as fake:
        fake.create_project("nakama/gitops", files={"apps/.gitkeep": b""})
        bot = fake.nakama
        assert bot.bot and fake.memberships_of(bot.id) == ["nakama-apps"]
        assert api(fake).groups.get("nakama-apps").full_path == "nakama-apps"
        unseen = failure(lambda: api(fake).projects.get("nakama/gitops"))
        assert (unseen.response_code, body(unseen)) == (404, {"message": "404 Project Not Found"})
        gitops = api(fake, ADMIN_TOKEN).projects.get("nakama/gitops")
        refused = failure(
            lambda: gitops.members.create({"user_id": bot.id, "access_level": MAINTAINER})
        )
        assert refused.response_code == 400
        assert body(refused) == {
            "message": {"user_id": ["project bots cannot be added to other groups / projects"]}
        }
        assert fake.memberships_of(bot.id) == ["nakama-apps"]
        # A user (not a bot) may be a member of both.
        carol = fake.add_user("carol")
        gitops.members.create({"user_id": carol.id, "access_level": MAINTAINER})
        assert fake.members("nakama/gitops") == {"carol": MAINTAINER}


def test_scopes_and_expiry_of_tokens(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        demo(fake)
        reader = fake.add_personal_token(fake.nakama, scopes=("read_api",))
        expired = fake.add_personal_token(fake.nakama, expires_at="2020-01-01")
        project = api(fake, reader).projects.get("nakama-apps/demo")
        refused = failure(lambda: project.hooks.create({"url": "https://hooks.example.org/x"}))
        assert refused.response_code == 403 and body(refused)["error"] == "insufficient_scope"
        gone = failure(lambda: api(fake, expired).projects.get("nakama-apps/demo"))
        assert (gone.response_code, body(gone)) == (401, {"message": "401 Unauthorized"})


# --- 2. the URL blocker for hooks -----------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/build-image/demo",
        "http://localhost:8000/build-image/demo",
        "http://[::1]:8000/x",
        "https://10.20.30.40/x",
        "https://172.16.0.9/x",
        "https://192.168.1.10/x",
        "http://169.254.169.254/latest/meta-data",
        "https://nakama.internal/build-image/demo",  # resolves to 10.0.0.5
    ],
)
def test_hooks_to_the_local_network_are_refused_by_default(tmp_path: Path, url: str) -> None:
    with fake_gitlab(tmp_path) as fake:
        fake.hosts["nakama.internal"] = "10.0.0.5"
        demo(fake)
        project = api(fake).projects.get("nakama-apps/demo")
        refused = failure(lambda: project.hooks.create({"url": url, "push_events": True}))
        assert (refused.response_code, body(refused)) == (422, {"error": "Invalid url given"})
        assert fake.hooks("demo") == []
        # The admin setting, or the allowlist, lets it through.
        fake.outbound_local_requests_allowlist.append(str(urlsplit(url).hostname))
        fake.outbound_local_requests_allowlist.append("10.0.0.5")
        assert project.hooks.create({"url": url}).url == url


def test_public_names_and_the_instance_itself_are_allowed(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        demo(fake)
        project = api(fake).projects.get("nakama-apps/demo")
        for url in ("https://nakama.example.org/build-image/demo", f"{fake.url}/-/hook"):
            assert project.hooks.create({"url": url, "push_events": False}).url == url
        fake.allow_local_requests = True
        assert project.hooks.create({"url": "http://127.0.0.1:9/x"}).url == "http://127.0.0.1:9/x"


# --- 3. pipeline variables and CI rules -----------------------------------------------------------
def test_trigger_variables_need_the_minimum_override_role(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        dev = fake.add_user("dev")
        fake.set_membership("nakama/pipelines", dev, DEVELOPER)
        devs_trigger = fake.add_trigger_token("nakama/pipelines", owner=dev)
        pipelines = api(fake).projects.get("nakama/pipelines")
        assert pipelines.ci_pipeline_variables_minimum_override_role == "developer"
        assert pipelines.trigger_pipeline("main", devs_trigger, variables=BUILD).status == "pending"

        pipelines.ci_pipeline_variables_minimum_override_role = "maintainer"
        pipelines.save()
        refused = failure(lambda: pipelines.trigger_pipeline("main", devs_trigger, variables=BUILD))
        assert refused.response_code == 400
        assert body(refused) == {
            "message": {"base": ["Insufficient permissions to set pipeline variables"]}
        }
        # Nakama's own trigger (owned by its Owner user) still may.
        assert pipelines.trigger_pipeline("main", TRIGGER_TOKEN, variables=BUILD).id
        # A Maintainer may not make it owner-only, nor lower it once it is.
        as_dev = api(fake, fake.add_personal_token(dev)).projects.get("nakama/pipelines")
        as_dev.ci_pipeline_variables_minimum_override_role = "developer"
        assert failure(as_dev.save).response_code == 403


def test_the_gitlab_com_profile_allows_no_pipeline_variables(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path, profile="gitlab.com") as fake:
        pipelines = api(fake).projects.get("nakama/pipelines")
        assert pipelines.ci_pipeline_variables_minimum_override_role == "no_one_allowed"
        refused = failure(
            lambda: pipelines.trigger_pipeline("main", TRIGGER_TOKEN, variables=BUILD)
        )
        assert "Insufficient permissions to set pipeline variables" in str(body(refused))
        assert fake.triggered() == []


def test_a_trigger_whose_rules_select_no_job_makes_no_pipeline(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        pipelines = api(fake).projects.get("nakama/pipelines")
        build = pipelines.trigger_pipeline("main", TRIGGER_TOKEN, variables=BUILD)
        reload = pipelines.trigger_pipeline(
            "main", TRIGGER_TOKEN, variables={"NAKAMA_KIND": "reload"}
        )
        assert [(j.name, j.stage) for j in pipelines.pipelines.get(build.id).jobs.list()] == [
            ("build-image", "build")
        ]
        assert [j.name for j in pipelines.pipelines.get(reload.id).jobs.list()] == ["reload-code"]
        refused = failure(
            lambda: pipelines.trigger_pipeline(
                "main", TRIGGER_TOKEN, variables={"NAKAMA_KIND": "deploy"}
            )
        )
        assert refused.response_code == 400
        assert "Pipeline will not run for the selected trigger" in str(body(refused))
        assert len(fake.triggered()) == 2


# --- 4. default_branch of a new project -----------------------------------------------------------
def test_default_branch_is_ignored_for_an_empty_project(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        group_id = api(fake).groups.get("nakama-apps").id
        spec = {"namespace_id": group_id, "default_branch": "production"}
        empty = api(fake).projects.create({**spec, "name": "empty"})
        readme = api(fake).projects.create(
            {**spec, "name": "readme", "initialize_with_readme": True}
        )
        assert empty.default_branch == "main"
        head = git("--git-dir", str(fake.project("empty").repo), "symbolic-ref", "HEAD")
        assert head.stdout.strip() == "refs/heads/main"
        assert readme.default_branch == "production"


# --- 5. delayed deletion --------------------------------------------------------------------------
def test_delete_marks_and_renames_and_the_path_can_be_reused(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        project = demo(fake)
        handle = api(fake).projects.get("nakama-apps/demo")
        handle.hooks.create({"url": "https://nakama.example.org/build-image/demo"})
        handle.deploytokens.create({"name": "sync", "scopes": ["read_repository"]})

        api(fake).projects.delete("nakama-apps/demo")

        assert failure(lambda: api(fake).projects.get("nakama-apps/demo")).response_code == 404
        renamed = api(fake).projects.get(project.id)
        assert renamed.path == f"demo-deletion_scheduled-{project.id}"
        assert renamed.name == f"demo-deletion_scheduled-{project.id}"
        assert renamed.marked_for_deletion_on
        assert len(renamed.hooks.list()) == 1 and len(project.deploy_tokens) == 1  # kept
        again = api(fake).projects.create(
            {"name": "demo", "path": "demo", "namespace_id": api(fake).groups.get("nakama-apps").id}
        )
        assert again.id != project.id and fake.project("demo").id == again.id
        assert fake.purge() == [f"nakama-apps/demo-deletion_scheduled-{project.id}"]
        assert failure(lambda: api(fake).projects.get(project.id)).response_code == 404


# --- 6. compare limits ----------------------------------------------------------------------------
def test_a_compare_past_diff_max_files_is_cut_and_says_so(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path, diff_max_files=3) as fake:
        project = demo(fake)
        handle = api(fake).projects.get("nakama-apps/demo")
        base = fake_head(project)
        three = commit(handle, {f"f{i}.txt": "x" for i in range(3)})
        four = commit(handle, {f"g{i}.txt": "x" for i in range(4)})
        exact = handle.repository_compare(base, three, straight=True)
        assert (len(exact["diffs"]), exact["compare_timeout"]) == (3, False)
        cut = handle.repository_compare(three, four, straight=True)
        assert (len(cut["diffs"]), cut["compare_timeout"]) == (3, True)


def fake_head(project: Any) -> str:
    return git("--git-dir", str(project.repo), "rev-parse", "main").stdout.strip()


def commit(handle: Any, files: dict[str, str]) -> str:
    actions = [
        {
            "action": "create",
            "file_path": path,
            "content": base64.b64encode(text.encode()).decode(),
            "encoding": "base64",
        }
        for path, text in files.items()
    ]
    return str(
        handle.commits.create({"branch": "main", "commit_message": "c", "actions": actions}).id
    )


# --- 7. memberships -------------------------------------------------------------------------------
def test_a_project_membership_below_an_inherited_one_is_refused(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        demo(fake)
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        fake.set_membership("nakama-apps", alice, OWNER)
        fake.set_membership("nakama-apps", bob, DEVELOPER)
        members = api(fake).projects.get("nakama-apps/demo").members
        refused = failure(lambda: members.create({"user_id": alice.id, "access_level": MAINTAINER}))
        assert refused.response_code == 400
        assert body(refused) == {
            "message": {
                "access_level": [
                    "should be greater than or equal to Owner inherited membership "
                    "from group nakama-apps"
                ]
            }
        }
        # Not a direct member, but an Owner through the group.
        assert failure(lambda: members.get(alice.id)).response_code == 404
        assert (
            api(fake).projects.get("nakama-apps/demo").members_all.get(alice.id).access_level == 50
        )
        # At or above the inherited level is fine.
        assert members.create({"user_id": bob.id, "access_level": MAINTAINER}).access_level == 40
        member = members.get(bob.id)
        member.access_level = REPORTER
        assert failure(member.save).response_code == 400
        assert fake.members("demo") == {"bob": MAINTAINER}


# --- 8. the protected default branch --------------------------------------------------------------
def test_developers_cannot_push_to_the_default_branch_and_nobody_force_pushes(
    tmp_path: Path,
) -> None:
    with fake_gitlab(tmp_path) as fake:
        project = demo(fake)
        dev = fake.add_user("dev")
        fake.set_membership("nakama-apps/demo", dev, DEVELOPER)
        dev_token = fake.add_personal_token(dev)
        work = tmp_path / "work"
        url = fake.git_url("demo").replace(TOKEN, dev_token)
        git("clone", "-q", url, str(work))
        (work / "app.py").write_text("print(2)\n")
        git("commit", "-qam", "two", cwd=work)
        pushed = git("push", "origin", "HEAD:main", cwd=work, check=False)
        assert pushed.returncode != 0
        assert "not allowed to push code to protected branches" in pushed.stderr
        git("push", "-q", "origin", "HEAD:feature", cwd=work)  # another branch is fine
        as_dev = api(fake, dev_token).projects.get("nakama-apps/demo")
        refused = failure(lambda: commit(as_dev, {"x.txt": "x"}))
        assert refused.response_code == 403
        assert "You are not allowed to push code to protected branches" in str(body(refused))

        # A Maintainer (Nakama's user is Owner) pushes, but does not rewrite it.
        work2 = tmp_path / "work2"
        git("clone", "-q", fake.git_url("demo"), str(work2))
        (work2 / "app.py").write_text("print(3)\n")
        git("commit", "-qam", "three", cwd=work2)
        git("push", "-q", "origin", "HEAD:main", cwd=work2)
        git("reset", "-q", "--hard", "HEAD~1", cwd=work2)
        git("commit", "-q", "--allow-empty", "-m", "rewrite", cwd=work2)
        forced = git("push", "--force", "origin", "HEAD:main", cwd=work2, check=False)
        assert forced.returncode != 0
        assert "not allowed to force push code to a protected branch" in forced.stderr
        branches = api(fake).projects.get("nakama-apps/demo").protectedbranches.get("main")
        assert branches.allow_force_push is False
        assert [a["access_level"] for a in branches.push_access_levels] == [MAINTAINER]
        assert project.default_branch == "main"


# --- docs/cluster-install.md, troubleshooting: re-enable a disabled hook --------------------------
def test_a_hook_disabled_after_four_failures_is_enabled_again_by_a_test_push_event(
    tmp_path: Path,
) -> None:
    """The guide's fix for hooks GitLab disabled: once the receiver answers again, send a test
    push event (``POST /projects/:id/hooks/:hook_id/test/push_events``)."""
    answers = {"status": 500}

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": answers["status"], "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    with fake_gitlab(tmp_path, allow_local_requests=True) as fake, serve(receiver, port=port):
        demo(fake)
        handle = api(fake).projects.get("nakama-apps/demo")
        hook = handle.hooks.create({"url": f"http://127.0.0.1:{port}/build-image/demo"})
        for i in range(4):
            commit(handle, {f"n{i}.txt": "x"})
        fake.wait_for_deliveries()
        assert handle.hooks.get(hook.id).alert_status == "temporarily_disabled"
        commit(handle, {"skipped.txt": "x"})
        assert fake.wait_for_deliveries()[-1].skipped  # GitLab sends nothing now

        answers["status"] = 200
        handle.hooks.get(hook.id).test("push_events")
        assert fake.deliveries[-1].status == 200 and not fake.deliveries[-1].skipped
        assert handle.hooks.get(hook.id).alert_status == "executable"
