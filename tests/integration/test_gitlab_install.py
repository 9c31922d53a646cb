"""Cluster mode against what real GitLab refuses (the rules of tests/fakes/gitlab_rules.py): the
token's reach in each documented layout, hooks to a private address, pipeline variables, an
empty project's default branch, delayed deletion, compare overflow, inherited memberships.

The app is created through the composition root and the HTTP API where the whole create is at
stake (with the Kubernetes fake), through the adapters otherwise; a second GitLab user is there
to show what they reach.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

from backend.app import ClusterParts, build_platform, create_app
from backend.cluster.gitlab_access import check_access
from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from nakama.clients.gitlab import GitLabClient
from nakama.errors import Conflict, NotFound
from nakama.planning import Action, RefUpdate, plan_push
from nakama.settings import (
    FluxSettings,
    GitLabSettings,
    HarborSettings,
    KubernetesSettings,
    Settings,
)
from tests.fakes import gitlab_git
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.gitlab_rules import DEVELOPER, OWNER
from tests.fakes.kubernetes import KubeFake, kube_fake, kubeconfig
from tests.support import free_port, serve

__all__ = ["kube_fake", "kubeconfig"]

ADMIN = "nkm_gitlab-install-admin-token-0123456789"
FILES = {"app.py": b"import streamlit as st\n", "requirements.txt": b"streamlit==1.40.0\n"}
HOOK_TOKEN = "hook-secret-" + "i" * 20
HARBOR_HOST = "harbor.test"


@contextmanager
def fake_gitlab(tmp_path: Path, **options: Any) -> Iterator[GitLabFake]:
    options.setdefault("allow_local_requests", True)
    with GitLabFake(tmp_path / "gitlab", **options).serving() as fake:
        fake.create_project("nakama/gitops", files={"README.md": b"the cluster\n"})
        yield fake


def settings_for(
    tmp_path: Path, fake: GitLabFake, *, port: int = 9, group: str = "nakama-apps", **more: Any
) -> Settings:
    return Settings(
        mode="cluster",
        data_dir=tmp_path / "nakama",
        public_url=f"http://127.0.0.1:{port}",
        admin_token=SecretStr(ADMIN),
        gitlab=GitLabSettings(
            url=fake.url,
            token=SecretStr(TOKEN),
            trigger_token=SecretStr(TRIGGER_TOKEN),
            group=group,
            max_attempts=2,
        ),
        harbor=HarborSettings(url=f"https://{HARBOR_HOST}", password=SecretStr("harbor-pw-1")),
        kubernetes=KubernetesSettings(reload_via="kubernetes"),
        flux=FluxSettings(app_domain="apps.test", gitops_project="nakama/gitops"),
        **more,
    )


def client_for(settings: Settings) -> GitLabClient:
    return GitLabClient(settings.gitlab, sleep=lambda _s: None)


@contextmanager
def nakama_api(settings: Settings, port: int) -> Iterator[tuple[Any, httpx.Client]]:
    """Nakama on ``port``; Harbor (only asked to delete an app's images when a create is undone)
    answers that there are none."""
    platform = build_platform(settings)
    platform.bootstrap_admin()
    with (
        respx.mock(assert_all_called=False) as router,
        serve(create_app(platform), port=port) as base,
        httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
        ) as api,
    ):
        router.route(host=HARBOR_HOST).respond(
            404, json={"errors": [{"code": "NOT_FOUND", "message": "repository not found"}]}
        )
        router.route().pass_through()
        yield platform, api


# --- D1: the token reaches the GitOps and pipelines projects --------------------------------------
def test_a_group_token_on_the_apps_group_alone_reaches_nothing_else_and_nakama_says_so(
    tmp_path: Path, kube_fake: KubeFake, kubeconfig: Path
) -> None:
    """The layout the guide used to describe: GitLab lets the token's bot into nakama-apps only,
    so the GitOps and pipelines projects answer 404. The start-up check names both and the
    fix; a create fails saying which project the token cannot see."""
    with fake_gitlab(tmp_path, layout="apps-group-token") as fake:
        port = free_port()
        settings = settings_for(tmp_path, fake, port=port)
        client = client_for(settings)
        problems = check_access(client, settings)
        assert len(problems) == 2
        gitops, pipelines = problems
        assert (
            "cannot reach the GitOps project (NAKAMA_FLUX__GITOPS_PROJECT) nakama/gitops" in gitops
        )
        assert "pipelines project (NAKAMA_GITLAB__PIPELINES_PROJECT) nakama/pipelines" in pipelines
        for problem in problems:
            assert "GitLab answers 404" in problem
            assert "bot user can be a member of its own group or project only" in problem
            assert "personal access token of a dedicated user" in problem and TOKEN not in problem
        repo = GitOpsRepository(
            client, project_path="nakama/gitops", branch="main", author_name="n", author_email="n@x"
        )
        with pytest.raises(NotFound, match="may not see it"):
            repo.ensure_files({"apps/demo/x.yaml": "x: 1\n"}, message="m")

        with (
            nakama_api(settings, port) as (platform, api),
            structlog.testing.capture_logs() as logs,
        ):
            assert isinstance(platform.parts, ClusterParts) and platform.parts.check is not None
            platform.parts.check()  # what the reconcile loop runs first
            answer = api.post("/projects", json={"name": "demo"})
            after_get = api.get("/projects/demo").status_code
            after_list = api.get("/projects").json()
        warned = [e["problem"] for e in logs if e.get("event") == "gitlab token cannot do its work"]
        assert warned == problems
        assert answer.status_code == 404, answer.text
        said = answer.json()["detail"]
        assert "GitOps project 'nakama/gitops' does not exist in GitLab, or Nakama's token" in said
        # Nothing was made, so nothing is left half-made: no GitLab project, no project in
        # Nakama (once, a failed undo left it "deleting" for good), and the name is free.
        assert fake.find_project("nakama-apps/demo") is None
        assert after_get == 404 and after_list == []
        client.close()


def test_one_group_token_on_a_common_top_group_creates_and_builds(
    tmp_path: Path, kube_fake: KubeFake, kubeconfig: Path
) -> None:
    """The documented group-token layout: nakama/apps, nakama/gitops, nakama/pipelines and the
    token on nakama."""
    with fake_gitlab(tmp_path, layout="group-token", group="nakama/apps") as fake:
        port = free_port()
        settings = settings_for(tmp_path, fake, port=port, group="nakama/apps")
        client = client_for(settings)
        assert check_access(client, settings) == []
        with nakama_api(settings, port) as (_platform, api):
            created = api.post("/projects", json={"name": "demo"})
            assert created.status_code == 201, created.text
        assert created.json()["clone_url"] == f"{fake.url}/nakama/apps/demo.git"
        gitops = fake.project("nakama/gitops")
        assert "apps/demo/imagepolicy.yaml" in gitlab_git.list_tree(gitops.repo, "main")
        [build] = fake.triggered("nakama/pipelines")
        assert build.variables["NAKAMA_KIND"] == "build"
        assert build.user_id == fake.nakama.id  # the bot owns the trigger and may set variables
        # A second user without membership sees none of it.
        bob = fake.add_personal_token(fake.add_user("bob"))
        other = GitLabClient(GitLabSettings(url=fake.url, token=SecretStr(bob), max_attempts=1))
        with pytest.raises(NotFound):
            other.call(lambda: other.api.projects.get("nakama/apps/demo"), what="get")
        other.close()
        client.close()


def test_the_default_layout_user_token_reaches_everything(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        settings = settings_for(tmp_path, fake)
        client = client_for(settings)
        assert check_access(client, settings) == []
        # Without its membership of nakama (the GitOps project's group) it is one problem.
        fake.set_membership("nakama", fake.nakama, None)
        [problem] = check_access(client, settings)
        assert "nakama/gitops" in problem and "make nakama Maintainer of it" in problem
        fake.set_membership("nakama/gitops", fake.nakama, DEVELOPER)
        [problem] = check_access(client, settings)
        assert "is Developer of the GitOps project" in problem and "needs Maintainer" in problem
        client.close()


# --- D4: hooks to a private or loopback address ---------------------------------------------------
def test_a_create_whose_hooks_gitlab_refuses_fails_before_anything_is_made(
    tmp_path: Path, kube_fake: KubeFake, kubeconfig: Path
) -> None:
    with fake_gitlab(tmp_path, allow_local_requests=False) as fake:
        port = free_port()
        settings = settings_for(tmp_path, fake, port=port)
        gitops_before = gitlab_git.refs(fake.project("nakama/gitops").repo)
        with nakama_api(settings, port) as (_platform, api):
            refused = api.post("/projects", json={"name": "demo"})
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]
            assert f"GitLab refuses webhooks to http://127.0.0.1:{port}" in detail
            assert "Allow requests to the local network from webhooks and integrations" in detail
            assert fake.find_project("nakama-apps/demo") is None and not fake.marked_for_deletion()
            assert gitlab_git.refs(fake.project("nakama/gitops").repo) == gitops_before
            assert fake.hooks("nakama/pipelines") == []  # the check hook is not left behind
            assert api.get("/projects").json() == []
            # The operator's fix: GitLab's allowlist (or the admin setting).
            fake.outbound_local_requests_allowlist.append("127.0.0.1")
            created = api.post("/projects", json={"name": "demo"})
            assert created.status_code == 201, created.text
            assert api.post("/projects", json={"name": "demo2"}).status_code == 201
        assert [u for u, _ in fake.refused_hook_urls] == [f"http://127.0.0.1:{port}/build-image"]
        checks = [r for r in fake.requests_to("POST", "/hooks") if r.path.endswith("/1/hooks")]
        assert len(checks) == 2  # refused once, passed once, then not tried again
        assert fake.hooks("nakama/pipelines") == []
        assert len(fake.hooks("demo")) == 2


# --- D7: pipeline variables may be forbidden ------------------------------------------------------
def test_no_one_allowed_pipeline_variables_fail_clearly_until_setup_fixes_it(
    tmp_path: Path, kube_fake: KubeFake, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_gitlab(tmp_path, profile="gitlab.com") as fake:
        port = free_port()
        settings = settings_for(tmp_path, fake, port=port)
        with nakama_api(settings, port) as (_platform, api):
            refused = api.post("/projects", json={"name": "demo"})
            assert refused.status_code >= 400
            detail = refused.json()["detail"]
            assert "Insufficient permissions to set pipeline variables" in detail
            assert "ci_pipeline_variables_minimum_override_role" in detail
            assert "nakama cluster setup gitlab" in detail
            assert fake.find_project("nakama-apps/demo") is None and fake.triggered() == []

            from nakama_cli.gitlab_setup import gitlab_setup_main

            for key, value in {
                "NAKAMA_GITLAB__URL": fake.url,
                "NAKAMA_GITLAB__TOKEN": TOKEN,
                "NAKAMA_GITLAB__TRIGGER_TOKEN": TRIGGER_TOKEN,
                "NAKAMA_PUBLIC_URL": f"http://127.0.0.1:{port}",
            }.items():
                monkeypatch.setenv(key, value)
            out = _Out()
            assert gitlab_setup_main([], out=out) == 0, out.text
            assert "pipeline variables allowed from owner (was no_one_allowed)" in out.text
            assert fake.project("nakama/pipelines").ci_pipeline_variables_minimum_override_role == (
                "owner"
            )
            created = api.post("/projects", json={"name": "demo"})
            assert created.status_code == 201, created.text
        assert len(fake.triggered()) == 1


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


# --- D11: the deploy branch of an empty project ---------------------------------------------------
def test_the_deploy_branch_becomes_the_default_though_gitlab_ignores_it_at_creation(
    tmp_path: Path,
) -> None:
    with fake_gitlab(tmp_path) as fake:
        client = client_for(settings_for(tmp_path, fake))
        forge = GitLabForge(client, hook_base_url="http://127.0.0.1:9")
        sha = forge.create_repository(
            "demo", files=FILES, branch="production", hook_token=HOOK_TOKEN
        )
        project = fake.project("demo")
        head = gitlab_git.run_git(["symbolic-ref", "HEAD"], git_dir=project.repo)
        assert head.stdout.decode().strip() == "refs/heads/production"
        assert client.api.projects.get("nakama-apps/demo").default_branch == "production"
        assert forge.head("demo", "production") == sha
        assert {h.branch_filter for h in fake.hooks("demo")} == {"production"}
        assert [r.method for r in fake.requests_to("PUT", "/projects/")] == ["PUT"]
        client.close()


# --- D12: an inherited Owner as the app's maintainer ----------------------------------------------
def test_an_owner_of_the_group_is_maintainer_enough(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        client = client_for(settings_for(tmp_path, fake))
        forge = GitLabForge(client, hook_base_url="http://127.0.0.1:9")
        alice = fake.add_user("alice")
        fake.add_user("bob")
        fake.set_membership("nakama-apps", alice, OWNER)
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        forge.add_maintainer("demo", "alice")  # 400 higher_access_level_than_group: fine
        forge.add_maintainer("demo", "bob")
        assert fake.members("demo") == {"bob": 40}
        forge.set_member_access("demo", "alice", DEVELOPER)  # GitLab keeps her group role
        assert fake.members("demo") == {"bob": 40}
        forge.set_member_access("demo", "bob", DEVELOPER)
        assert fake.members("demo") == {"bob": DEVELOPER}
        client.close()


# --- D13: a compare GitLab cut short --------------------------------------------------------------
def test_a_cut_compare_counts_as_unknown_so_a_dependency_change_past_the_cut_builds(
    tmp_path: Path,
) -> None:
    with fake_gitlab(tmp_path, diff_max_files=3) as fake:
        client = client_for(settings_for(tmp_path, fake))
        forge = GitLabForge(client, hook_base_url="http://127.0.0.1:9")
        before = forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        changes = {"a.py": b"1", "b.py": b"2", "c.py": b"3", "requirements.txt": b"plotly\n"}
        handle = client.api.projects.get("nakama-apps/demo")
        actions = [
            {
                "action": "update" if path in FILES else "create",
                "file_path": path,
                "content": base64.b64encode(text).decode(),
                "encoding": "base64",
            }
            for path, text in changes.items()
        ]
        after = str(
            handle.commits.create({"branch": "main", "commit_message": "m", "actions": actions}).id
        )
        raw = handle.repository_compare(before, after, straight=True)
        assert raw["compare_timeout"] is True
        assert "requirements.txt" not in [d["new_path"] for d in raw["diffs"]]  # cut off
        changed = forge.changed_paths("demo", before, after)
        assert changed is None
        update = RefUpdate(ref="refs/heads/main", before=before, after=after)
        plan = plan_push(
            update,
            deploy_branch="main",
            dependency_patterns=("requirements.txt",),
            changed_paths=changed,
            build_exists=False,  # no image for the new requirements
        )
        assert plan.action is Action.BUILD
        client.close()


# --- delayed deletion: the name is free again -----------------------------------------------------
def test_delete_strips_the_kept_project_and_the_name_can_be_used_again(tmp_path: Path) -> None:
    with fake_gitlab(tmp_path) as fake:
        client = client_for(settings_for(tmp_path, fake))
        forge = GitLabForge(client, hook_base_url="http://127.0.0.1:9")
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        handle = client.api.projects.get("nakama-apps/demo")
        handle.deploytokens.create({"name": "nakama-sync", "scopes": ["read_repository"]})
        first = fake.project("demo")

        forge.delete_repository("demo")

        [kept] = fake.marked_for_deletion()
        assert kept is first and kept.path == f"demo-deletion_scheduled-{first.id}"
        assert kept.hooks == [] and kept.deploy_tokens == []  # nothing calls Nakama, or reads
        forge.delete_repository("demo")  # again: nothing there, fine
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        assert fake.project("demo").id != first.id

        # A GitLab that keeps the path until it purges: the create says why.
        fake.rename_on_delete = False
        forge.delete_repository("demo")
        with pytest.raises(Conflict, match="GitLab keeps its repository nakama-apps/demo"):
            forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        fake.purge()
        forge.create_repository("demo", files=FILES, branch="main", hook_token=HOOK_TOKEN)
        client.close()
