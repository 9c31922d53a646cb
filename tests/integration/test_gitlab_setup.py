"""``nakama cluster setup gitlab`` against the GitLab fake, which refuses what GitLab refuses:
it makes the GitOps project, a trigger token, the pipeline-variables role, and says what is left
(hooks GitLab refuses, a token that cannot reach, Flux's token without the Maintainer role)."""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nakama_cli.gitlab_setup import gitlab_setup_main
from nakama_cli.main import app as cli_app
from tests.fakes import gitlab_git
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.gitlab_rules import DEVELOPER, MAINTAINER

PUBLIC_URL = "http://127.0.0.1:9"


@contextmanager
def fake_gitlab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, trigger: bool = True, **options: Any
) -> Iterator[GitLabFake]:
    for name in [n for n in os.environ if n.startswith("NAKAMA_")]:
        monkeypatch.delenv(name)
    with GitLabFake(tmp_path / "gitlab", **options).serving() as fake:
        env = {"NAKAMA_GITLAB__URL": fake.url, "NAKAMA_GITLAB__TOKEN": TOKEN}
        env |= {"NAKAMA_PUBLIC_URL": PUBLIC_URL, "NAKAMA_DATA_DIR": str(tmp_path / "data")}
        env |= {"NAKAMA_GITLAB__MAX_ATTEMPTS": "1"}
        if trigger:
            env["NAKAMA_GITLAB__TRIGGER_TOKEN"] = TRIGGER_TOKEN
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield fake


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = gitlab_setup_main(list(argv), out=out)
    return code, out.getvalue()


def writes(fake: GitLabFake) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.method in ("POST", "PUT")]


def test_first_run_makes_the_gitops_project_and_says_what_is_left_then_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_gitlab(tmp_path, monkeypatch) as fake:
        code, out = run()
        assert code == 1
        assert "as nakama (a user's token)" in out
        assert "GitOps project nakama/gitops: created (private, default branch main)" in out
        gitops = fake.project("nakama/gitops")
        files = gitlab_git.list_tree(gitops.repo, "main")
        assert {"apps/.gitkeep", "clusters/nakama/apps/.gitkeep"} <= set(files)
        assert "pipelines project nakama/pipelines: has .gitlab-ci.yml" in out
        assert "trigger token owned by nakama" in out
        assert "pipeline variables allowed from developer" in out
        assert "access: the token reaches" in out
        # GitLab refuses hooks to 127.0.0.1 by default: the one thing left, with the fix.
        [todo] = [line for line in out.splitlines() if line.startswith("to do:")]
        assert f"GitLab refuses webhooks to {PUBLIC_URL}" in todo
        assert "Allow requests to the local network from webhooks and integrations" in todo
        assert TOKEN not in out and TRIGGER_TOKEN not in out

        fake.allow_local_requests = True  # the administrator's step
        before = len(fake.requests)
        code, out = run()
        assert (code, out.splitlines()[-1]) == (0, "GitLab is set up.")
        again = [f"{r.method} {r.path}" for r in fake.requests[before:] if r.method != "GET"]
        assert again == ["POST /api/v4/projects/1/hooks", "DELETE /api/v4/projects/1/hooks/1"]
        assert fake.hooks("nakama/pipelines") == []
        # The command of docs/cluster-install.md, step 2, through the CLI.
        result = CliRunner().invoke(cli_app, ["cluster", "setup", "gitlab"])
        assert result.exit_code == 0, result.output
        assert "GitLab is set up." in result.output


def test_gitlab_com_defaults_no_trigger_token_and_a_developer_flux_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_gitlab(
        tmp_path, monkeypatch, trigger=False, profile="gitlab.com", allow_local_requests=True
    ) as fake:
        fake.create_project("nakama/gitops", files={"README.md": b"x\n"})
        flux_bot = fake.add_project_access_token(
            "nakama/gitops", "glpat-flux-token-0123456789", DEVELOPER,
            name="flux", scopes=("write_repository",),
        )  # fmt: skip
        code, out = run()
        assert code == 1
        [token] = re.findall(r"token: (glptt-\S+)", out)
        assert out.count(token) == 1
        assert fake.trigger_owners[token] == fake.nakama.id
        assert "pipeline variables allowed from owner (was no_one_allowed)" in out
        pipelines = fake.project("nakama/pipelines")
        assert pipelines.ci_pipeline_variables_minimum_override_role == "owner"
        [todo] = [line for line in out.splitlines() if line.startswith("to do:")]
        assert "flux (Developer) cannot push to nakama/gitops main" in todo
        assert "needs Maintainer" in todo
        # What Flux would meet: GitLab refuses the Developer token's push to the branch.
        work = tmp_path / "work"
        url = fake.git_url("nakama/gitops").replace(TOKEN, "glpat-flux-token-0123456789")
        subprocess.run(["git", "clone", "-q", url, str(work)], check=True)
        (work / "tag.txt").write_text("main-0123abcd-20260101000000\n")
        subprocess.run(["git", "add", "."], cwd=work, check=True)
        subprocess.run(["git", "commit", "-qm", "tag"], cwd=work, check=True)
        pushed = subprocess.run(
            ["git", "push", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True
        )
        assert "not allowed to push code to protected branches" in pushed.stderr
        fake.set_membership("nakama/gitops", flux_bot, MAINTAINER)
        fake.access_tokens["glpat-flux-token-0123456789"].access_level = MAINTAINER
        monkeypatch.setenv("NAKAMA_GITLAB__TRIGGER_TOKEN", token)
        code, out = run()
        assert code == 0, out
        assert "Flux's token: flux may push to nakama/gitops main (Maintainer)" in out
        assert "token: glptt" not in out


def test_a_group_token_on_the_apps_group_alone_is_told_what_it_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_gitlab(
        tmp_path, monkeypatch, layout="apps-group-token", allow_local_requests=True
    ) as fake:
        fake.create_project("nakama/gitops", files={"README.md": b"x\n"})
        code, out = run()
        assert code == 1
        assert "a group or project access token's bot" in out
        todo = [line for line in out.splitlines() if line.startswith("to do:")]
        assert any(
            "GitOps project nakama/gitops does not exist and could not be" in t for t in todo
        )
        reach = [t for t in todo if "cannot reach" in t]
        assert [("nakama/gitops" in t, "nakama/pipelines" in t) for t in reach] == [
            (True, False),
            (False, True),
        ]
        assert all("bot user can be a member of its own group or project only" in t for t in reach)
        # It made nothing: no project, no hook, no commit.
        assert sorted(p.full_path for p in fake.projects.values()) == [
            "nakama/gitops",
            "nakama/pipelines",
        ]
        assert fake.hooks("nakama/pipelines") == [] and fake.hooks("nakama/gitops") == []
        assert not [w for w in writes(fake) if "/repository/commits" in w]


def test_no_token_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_gitlab(tmp_path, monkeypatch) as fake:
        monkeypatch.delenv("NAKAMA_GITLAB__TOKEN")
        assert run()[0] == 2
        assert "NAKAMA_GITLAB__TOKEN is not set" in capsys.readouterr().err
        assert fake.requests == []
