"""Finding M3 of the local security review: one user's slow builds must not hold up the others.

Bob pushes a dependency whose build backend sleeps to two of his projects. With the old runner
(two job workers for everyone, first come first served) his builds took both workers, and
Alice's code-only push waited until one of them timed out (13.2 s in the review, with a 15 s
build timeout). Now reloads have workers of their own and one user runs one build at a time:
Alice's reload goes live in a second or two while Bob's first build runs and his second waits,
Alice's own build starts at once beside Bob's; with both build workers taken, Carol's push and
her rollback (recorded without a dependency hash) go live at once too; and Bob's second build
runs when his first ends. On SQLite and PostgreSQL (the claim is a query).

Runs for real: ``nakama up``, git pushes, uv builds (in the sandbox, as root)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    wait_for,
    write_tiny_kit,
)
from tests.e2e.test_variables import user
from tests.support import serve_directory, write_sdist

ALICE_APP, BOB_APPS, CAROL_APP = "alice-app", ("bob-app", "bob-two"), "carol-app"
# Short, so that the test is; long enough that Bob's builds outlast everything Alice does.
BUILD_TIMEOUT_S = 20
# A reload stops the app and starts it on the new code: a second or two on a busy machine.
RELOAD_LIMIT_S = 6.0

# A package whose build never ends: its backend sleeps until the build timeout kills it.
SLOW_BACKEND = """
import time

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    time.sleep(600)
    raise SystemExit("slow: never built")
"""


@pytest.fixture
def nakama(tmp_path: Path, uv_cache: Path, database_url: str) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    env = {
        "NAKAMA_BUILDER__BUILD_TIMEOUT_S": str(BUILD_TIMEOUT_S),
        "NAKAMA_DATABASE_URL": database_url,
    }
    with running(tmp_path / "data", starter_kit=kit, uv_cache=uv_cache, extra_env=env) as server:
        yield server


@pytest.fixture
def slow_sdists(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The URLs of slow sdists served on loopback, one per user (so different dependencies)."""
    served = tmp_path / "served"
    sdists = {}
    for who in ("alice", "bob"):
        name = f"{who}slow"
        pyproject = (
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\n'
        )
        files = {"pyproject.toml": pyproject, "backend.py": SLOW_BACKEND}
        sdists[who] = write_sdist(served, name, "1.0", files).name
    with serve_directory(served) as base:
        yield {who: f"{base}/{name}" for who, name in sdists.items()}


def pipeline_of(server: NakamaProcess, name: str, commit: str) -> dict[str, Any] | None:
    return next((p for p in server.pipelines(name) if p["commit"] == commit), None)


def status_of(server: NakamaProcess, name: str, commit: str) -> str | None:
    p = pipeline_of(server, name, commit)
    return None if p is None else str(p["status"])


def push_version(work: Path, version: str) -> str:
    set_version(work, version)
    git("commit", "-qam", version, cwd=work)
    git_push(work)
    return git("rev-parse", "HEAD", cwd=work)


def live_within(url: str, token: str, version: str) -> float:
    """Seconds until the app at ``url`` answers ``version``."""
    started = time.monotonic()
    wait_for(
        lambda: fetch_text(url, token=token) == version,
        timeout=3 * BUILD_TIMEOUT_S,
        interval=0.1,
        what=f"{version} to go live",
    )
    return time.monotonic() - started


def push_requirement(work: Path, requirement: str) -> str:
    (work / "requirements.txt").write_text(f"{requirement}\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "a dependency that builds slowly", cwd=work)
    git_push(work)
    return git("rev-parse", "HEAD", cwd=work)


def test_bobs_slow_builds_hold_up_neither_alices_reload_nor_her_build(
    nakama: NakamaProcess, slow_sdists: dict[str, str], tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    _, bob = user(nakama, "bob")
    carol_token, carol = user(nakama, "carol")
    with alice, bob, carol:
        owners = {ALICE_APP: alice, **{name: bob for name in BOB_APPS}, CAROL_APP: carol}
        for name, client in owners.items():
            r = client.post("/api/v1/projects", json={"name": name})
            assert r.status_code == 201, r.text
        for name in owners:
            nakama.wait_deployed(name, nakama.pipelines(name)[0]["commit"], timeout=180)
        works = {name: clone(nakama, name, tmp_path / f"work-{name}") for name in owners}
        alice_url = str(nakama.project(ALICE_APP)["app_url"])
        carol_url = str(nakama.project(CAROL_APP)["app_url"])
        assert fetch_text(alice_url, token=alice_token) == "v1"
        assert fetch_text(carol_url, token=carol_token) == "v1"

        # Bob's two slow builds: the first runs, the second waits for it (one build per user).
        bob_commits = {
            name: push_requirement(works[name], f"bobslow @ {slow_sdists['bob']}")
            for name in BOB_APPS
        }
        wait_for(
            lambda: status_of(nakama, BOB_APPS[0], bob_commits[BOB_APPS[0]]) == "running",
            timeout=30,
            what="bob's first build to start",
        )
        time.sleep(1.0)  # the old runner's second worker takes Bob's second build meanwhile

        # Alice's code-only push goes live while both of Bob's builds are unfinished.
        started = time.monotonic()
        push_version(works[ALICE_APP], "v2")
        reload_s = (time.monotonic() - started) + live_within(alice_url, alice_token, "v2")
        bob_states = [status_of(nakama, name, bob_commits[name]) for name in BOB_APPS]
        print(f"\nalice's reload went live in {reload_s:.2f} s; bob's builds: {bob_states}")
        assert bob_states == ["running", "pending"], (reload_s, bob_states)
        assert reload_s < RELOAD_LIMIT_S, reload_s

        # Alice's build starts at once, beside Bob's first; his second still waits.
        alice_build = push_requirement(works[ALICE_APP], f"aliceslow @ {slow_sdists['alice']}")
        started = time.monotonic()
        wait_for(
            lambda: status_of(nakama, ALICE_APP, alice_build) == "running",
            timeout=10,
            what="alice's build to start",
        )
        print(f"alice's build started after {time.monotonic() - started:.2f} s")
        bob_states = [status_of(nakama, name, bob_commits[name]) for name in BOB_APPS]
        assert bob_states == ["running", "pending"], bob_states

        # Both build workers are taken (Bob's and Alice's builds): Carol's push and her rollback
        # to her first pipeline (a rollback is recorded without a dependency hash) are reloads.
        carol_first = nakama.pipelines(CAROL_APP)[-1]
        started = time.monotonic()
        push_version(works[CAROL_APP], "v2")
        push_s = (time.monotonic() - started) + live_within(carol_url, carol_token, "v2")
        started = time.monotonic()
        r = carol.post(
            f"/api/v1/projects/{CAROL_APP}/rollback", json={"pipeline_id": carol_first["id"]}
        )
        assert r.status_code == 202, r.text
        rollback_s = (time.monotonic() - started) + live_within(carol_url, carol_token, "v1")
        print(f"carol's push went live in {push_s:.2f} s, her rollback in {rollback_s:.2f} s")
        assert push_s < RELOAD_LIMIT_S and rollback_s < RELOAD_LIMIT_S, (push_s, rollback_s)
        assert status_of(nakama, ALICE_APP, alice_build) == "running"
        bob_states = [status_of(nakama, name, bob_commits[name]) for name in BOB_APPS]
        assert bob_states == ["running", "pending"], bob_states

        # Bob's second build is not starved: it runs once his first has timed out.
        wait_for(
            lambda: status_of(nakama, BOB_APPS[1], bob_commits[BOB_APPS[1]]) == "running",
            timeout=BUILD_TIMEOUT_S + 20,
            what="bob's second build to start",
        )
        first = pipeline_of(nakama, BOB_APPS[0], bob_commits[BOB_APPS[0]])
        assert first is not None and first["status"] == "failed", first
        assert "timed out" in str(first["error"]), first
        # Through all of it, what ran before goes on serving.
        assert fetch_text(alice_url, token=alice_token) == "v2"
        assert fetch_text(carol_url, token=carol_token) == "v1"
        assert httpx.get(f"{nakama.url}/healthz", timeout=5).status_code == 200
