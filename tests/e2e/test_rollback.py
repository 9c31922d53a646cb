"""Rollback in local mode, through a real `nakama up`, git over HTTP and real app processes: back
to an earlier pipeline's code and environment without a build, nothing undoes it by itself, and
the next push deploys as usual."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    clone,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
)

NAME = "sales-dashboard"


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    with running(tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache) as server:
        yield server


def commit_version(work: Path, version: str, *, requirements: str | None = None) -> str:
    set_version(work, version)
    if requirements is not None:
        (work / "requirements.txt").write_text(requirements)
    git("commit", "-qam", version, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def environments(nakama: NakamaProcess) -> list[str]:
    return sorted(p.name for p in (nakama.data_dir / "envs").iterdir() if p.name[0] != ".")


def rollback(
    nakama: NakamaProcess, pipeline_id: int, *, client: httpx.Client | None = None
) -> httpx.Response:
    return (client or nakama.api).post(
        f"/api/v1/projects/{NAME}/rollback", json={"pipeline_id": pipeline_id}
    )


def test_rollback_serves_the_old_version_until_the_next_push(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    assert nakama.api.post("/api/v1/projects", json={"name": NAME}).status_code == 201
    [first] = nakama.pipelines(NAME)
    app_url = nakama.wait_deployed(NAME, first["commit"])["app_url"]
    work = clone(nakama, NAME, tmp_path / "work")
    sha2 = commit_version(work, "v2")
    git_push(work)
    nakama.wait_deployed(NAME, sha2)
    sha3 = commit_version(work, "v3", requirements="six==1.16.0\n")
    git_push(work)
    nakama.wait_deployed(NAME, sha3)
    assert fetch_text(app_url) == "v3 six=1.16.0"
    built = environments(nakama)
    assert len(built) == 2
    v1, v2, v3 = sorted(nakama.pipelines(NAME), key=lambda p: p["id"])
    assert [v1["kind"], v2["kind"], v3["kind"]] == ["build", "reload", "build"]

    # the targets: successful, newest first, not the deployed commit
    targets = nakama.api.get(f"/api/v1/projects/{NAME}/rollback-targets").json()
    assert [t["id"] for t in targets] == [v2["id"], v1["id"]]

    # back to v2: its code and its environment (no six), and no build
    answer = rollback(nakama, v2["id"])
    assert answer.status_code == 202, answer.text
    back = answer.json()
    assert (back["kind"], back["commit"]) == ("build", sha2)
    assert back["reason"] == f"rollback to pipeline #{v2['id']} (commit {sha2[:7]})"
    project = nakama.wait_deployed(NAME, sha2)
    assert fetch_text(app_url) == "v2"
    assert project["last_push"] == {"action": "rollback", "reason": back["reason"]}
    assert project["image_tag"] == v1["tag"]  # v2 ran on v1's environment
    assert environments(nakama) == built
    log = nakama.api.get(f"/api/v1/projects/{NAME}/pipelines/{back['id']}/log").text
    assert "exists; no build" in log and "building environment" not in log
    targets = nakama.api.get(f"/api/v1/projects/{NAME}/rollback-targets").json()
    assert [t["commit"] for t in targets] == [sha3, v1["commit"]]

    # nothing undoes it by itself
    time.sleep(2)
    assert nakama.project(NAME)["deployed_commit"] == sha2
    assert nakama.pipelines(NAME)[0]["id"] == back["id"]
    assert fetch_text(app_url) == "v2"

    # and back to v1, the starter's first build
    assert rollback(nakama, v1["id"]).status_code == 202
    nakama.wait_deployed(NAME, v1["commit"])
    assert fetch_text(app_url) == "v1"

    # the next push, code only on top of v3, deploys with v3's dependencies
    sha4 = commit_version(work, "v4")
    git_push(work)
    nakama.wait_deployed(NAME, sha4)
    assert fetch_text(app_url) == "v4 six=1.16.0"
    latest = nakama.pipelines(NAME)[0]
    assert latest["commit"] == sha4 and latest["kind"] == "build"
    assert latest["reason"] == (
        f"dependency files changed: requirements.txt (since the rollback to {v1['commit'][:7]})"
    )
    assert nakama.project(NAME)["last_push"]["action"] == "build"
    assert environments(nakama) == built

    # a push after that is planned from its own before again
    sha5 = commit_version(work, "v5")
    git_push(work)
    nakama.wait_deployed(NAME, sha5)
    assert fetch_text(app_url) == "v5 six=1.16.0"
    assert nakama.pipelines(NAME)[0]["reason"] == "only code changed (1 file)"


def test_rollback_refusals(nakama: NakamaProcess, tmp_path: Path) -> None:
    assert nakama.api.post("/api/v1/projects", json={"name": NAME}).status_code == 201
    [first] = nakama.pipelines(NAME)
    nakama.wait_deployed(NAME, first["commit"])
    assert nakama.api.get(f"/api/v1/projects/{NAME}/rollback-targets").json() == []

    # the deployed commit
    deployed = rollback(nakama, first["id"])
    assert deployed.status_code == 409
    assert "is what is deployed now" in deployed.json()["detail"]

    # a failed pipeline
    work = clone(nakama, NAME, tmp_path / "work")
    broken = commit_version(work, "v2", requirements="nakama-no-such-package-xyz==0.0.1\n")
    git_push(work)
    failed = nakama.wait_failed(NAME, broken, timeout=120)
    refused = rollback(nakama, failed["id"])
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"pipeline #{failed['id']} did not succeed (failed); "
        "only a successful pipeline can be rolled back to"
    )

    # unknown pipelines, unknown projects, bad bodies
    assert rollback(nakama, 999999).status_code == 404
    assert (
        nakama.api.post(
            "/api/v1/projects/nope/rollback", json={"pipeline_id": first["id"]}
        ).status_code
        == 404
    )
    for body in ({}, {"pipeline_id": 0}, {"pipeline_id": first["id"], "force": True}):
        r = nakama.api.post(f"/api/v1/projects/{NAME}/rollback", json=body)
        assert r.status_code == 422, body

    # another user's project is as if it did not exist
    made = nakama.api.post("/api/v1/users", json={"username": "bob"})
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    with httpx.Client(base_url=nakama.url, headers=headers, timeout=30) as bob:
        assert rollback(nakama, first["id"], client=bob).status_code == 404
        assert bob.get(f"/api/v1/projects/{NAME}/rollback-targets").status_code == 404
    assert len(nakama.pipelines(NAME)) == 2  # nothing was submitted
    assert nakama.project(NAME)["deployed_commit"] == first["commit"]
