"""Pushes reach the app even when their hook cannot tell Nakama (review M8), with a real
``nakama up``, real git pushes and real app processes.

* A push of 20 000 small files and a code change: its hook body would be larger than the
  receiver takes (the review saw a 413 and a stale app), so the hook leaves out the file lists.
* A push Nakama never heard of (made while it was down, or whose hook failed) is caught up by
  local mode's reconciler: at start-up at once, and on its timer while Nakama runs.

Bob's project stands beside Alice's in each: nothing of his is redeployed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    clone,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
    wait_for,
)
from tests.e2e.test_variables import user

ALICE, BOB = "alice-app", "bob-app"


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    extra = {
        "NAKAMA_RECEIVER__RECONCILE_INTERVAL_S": "1",
        "NAKAMA_RECEIVER__CATCH_UP_AFTER_S": "2",
    }
    with running(
        tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache, extra_env=extra
    ) as server:
        yield server


def create_both(nakama: NakamaProcess) -> str:
    """Alice's and Bob's projects, each made and deployed by its owner; Alice's app URL."""
    urls = {}
    for username, name in (("alice", ALICE), ("bob", BOB)):
        _, client = user(nakama, username)
        with client:
            assert client.post("/api/v1/projects", json={"name": name}).status_code == 201
        first = nakama.pipelines(name)[0]["commit"]
        urls[name] = str(nakama.wait_deployed(name, first)["app_url"])
    return urls[ALICE]


def commit_version(work: Path, version: str) -> str:
    set_version(work, version)
    git("commit", "-qam", version, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def bob_pipelines(nakama: NakamaProcess) -> list[tuple[int, str]]:
    return [(p["id"], p["status"]) for p in nakama.pipelines(BOB)]


def test_a_push_of_twenty_thousand_files_goes_live(nakama: NakamaProcess, tmp_path: Path) -> None:
    url = create_both(nakama)
    work = clone(nakama, ALICE, tmp_path / "work")
    data = work / "data_files"
    data.mkdir()
    for i in range(20_000):
        (data / f"sample_data_file_with_a_fairly_long_name_{i:05}.csv").write_text(f"{i},1\n")
    git("add", "data_files", cwd=work)
    head = commit_version(work, "v2")
    said = git_push(work)
    assert "NOT delivered" not in said and "deploying" in said, said
    pipeline = nakama.wait_deployed(ALICE, head, timeout=240)
    assert fetch_text(url) == "v2"
    [deploy] = [p for p in nakama.pipelines(ALICE) if p["commit"] == head]
    assert deploy["kind"] == "reload" and "20001 files" in deploy["reason"], deploy
    assert not deploy["reason"].startswith("reconcile:"), "the hook itself delivered it"
    assert pipeline["status"] == "running"


def test_a_push_made_while_nakama_was_down_is_deployed_at_start_up(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    url = create_both(nakama)
    bob_before = bob_pipelines(nakama)
    work = clone(nakama, ALICE, tmp_path / "work")
    head = commit_version(work, "v2")
    nakama.stop()
    # Straight into the repository on disk: its hook runs and finds nobody to tell.
    repo = nakama.data_dir / "git" / f"{ALICE}.git"
    pushed = subprocess.run(
        ["git", "push", str(repo), "HEAD:main"], cwd=work, capture_output=True, text=True
    )
    assert pushed.returncode == 0 and "NOT delivered" in pushed.stderr, pushed.stderr
    nakama.start()
    nakama.wait_deployed(ALICE, head, timeout=120)
    wait_for(lambda: fetch_text(url) == "v2", timeout=30, what="v2 after the restart")
    [deploy] = [p for p in nakama.pipelines(ALICE) if p["commit"] == head]
    assert deploy["reason"] == "reconcile: missed push; only code changed (1 file)"
    assert bob_pipelines(nakama) == bob_before


def test_a_push_whose_hook_failed_is_deployed_by_the_timer(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    url = create_both(nakama)
    bob_before = bob_pipelines(nakama)
    (nakama.data_dir / "git" / f"{ALICE}.git" / "nakama" / "hook-token").write_text("broken")
    work = clone(nakama, ALICE, tmp_path / "work")
    head = commit_version(work, "v2")
    said = git_push(work)
    assert "NOT delivered" in said and "401" in said, said
    nakama.wait_deployed(ALICE, head, timeout=60)
    assert fetch_text(url) == "v2"
    mine = [p for p in nakama.pipelines(ALICE) if p["commit"] == head]
    assert [p["reason"] for p in mine] == ["reconcile: missed push; only code changed (1 file)"]
    time.sleep(3)  # later steps of the timer leave the deployed head alone
    assert len(nakama.pipelines(ALICE)) == 2
    assert bob_pipelines(nakama) == bob_before
