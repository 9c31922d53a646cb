"""Bounded reads against a real ``nakama up`` with two users, bob (the attacker) and alice
(review findings M1, M2, L3): bob's gigabyte file named like a dependency file costs Nakama no
memory and does not delay alice's push; a huge pipeline log is read by its tail and paged; bob
cannot hold more than his share of log streams, and those he holds do not slow alice's API."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.nakama_server import (
    NakamaProcess,
    fetch_text,
    git,
    git_push,
    running,
    set_version,
    wait_for,
    write_tiny_kit,
)
from tests.integration.test_web_security import Browser
from tests.support import sse_events

MiB = 1024 * 1024
PASSWORD = "a-long-password-1"


@pytest.fixture
def nakama(tmp_path: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    with running(tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv") as server:
        yield server


def user(nakama: NakamaProcess, name: str) -> tuple[str, httpx.Client]:
    r = nakama.api.post("/api/v1/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    token = str(r.json()["token"])
    client = httpx.Client(
        base_url=nakama.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    )
    return token, client


def create(nakama: NakamaProcess, client: httpx.Client, name: str) -> dict[str, Any]:
    assert client.post("/api/v1/projects", json={"name": name}).status_code == 201
    return nakama.wait_deployed(name, nakama.pipelines(name)[0]["commit"])


def clone_as(nakama: NakamaProcess, token: str, name: str, dest: Path) -> Path:
    url = nakama.project(name)["clone_url"].replace("http://", f"http://x:{token}@")
    git("clone", "-q", url, str(dest), cwd=dest.parent)
    git("config", "user.name", "someone", cwd=dest)
    git("config", "user.email", "someone@example.com", cwd=dest)
    return dest


def memory_mib(nakama: NakamaProcess) -> dict[str, float]:
    """Nakama's own peak (VmHWM) and current (VmRSS) resident memory, from /proc."""
    assert nakama.proc is not None
    fields = {}
    for line in Path(f"/proc/{nakama.proc.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def test_a_gigabyte_dependency_file_costs_nothing_and_does_not_hold_alice(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    bob_token, bob = user(nakama, "bob")
    with alice, bob:
        alice_app = create(nakama, alice, "alice-app")
        create(nakama, bob, "bob-app")
        bob_work = clone_as(nakama, bob_token, "bob-app", tmp_path / "bob")
        alice_work = clone_as(nakama, alice_token, "alice-app", tmp_path / "alice")

        # 1 GiB of zeros named like a requirements file: about 1 MiB packed.
        with (bob_work / "requirements-data.txt").open("wb") as f:
            f.truncate(1024 * MiB)
        git("add", "requirements-data.txt", cwd=bob_work)
        git("commit", "-qm", "data", cwd=bob_work)
        memory = memory_mib(nakama)
        git_push(bob_work)
        bob_commit = git("rev-parse", "HEAD", cwd=bob_work)

        # At once alice pushes a code-only change.
        set_version(alice_work, "v2")
        git("commit", "-qam", "v2", cwd=alice_work)
        pushed = time.monotonic()
        git_push(alice_work)
        wait_for(
            lambda: fetch_text(alice_app["app_url"], token=alice_token) == "v2",
            timeout=60,
            what="alice's v2",
        )
        alice_s = time.monotonic() - pushed
        after = memory_mib(nakama)
        print(
            f"\nalice live {alice_s:.2f}s after her push; Nakama VmHWM {memory['VmHWM']:.0f} -> "
            f"{after['VmHWM']:.0f} MiB, VmRSS {memory['VmRSS']:.0f} -> {after['VmRSS']:.0f} MiB"
        )
        assert alice_s < 5, "alice's push waited behind bob's"
        assert after["VmHWM"] - memory["VmHWM"] < 200, "the file was read into memory"

        failed = nakama.wait_failed("bob-app", bob_commit, timeout=60)
        print(f"bob's build: {failed['error']}")
        assert memory_mib(nakama)["VmHWM"] - memory["VmHWM"] < 200
        for words in ("requirements-data.txt", "1073741824 bytes", "1048576",
                      "NAKAMA_PLANNING__MAX_DEPENDENCY_FILE_BYTES"):  # fmt: skip
            assert words in (failed["error"] or "")
        log = bob.get(f"/api/v1/projects/bob-app/pipelines/{failed['id']}/log").text
        assert "NAKAMA_PLANNING__MAX_DEPENDENCY_FILE_BYTES" in log
        # The app bob had still runs, and nothing of the gigabyte reached its code.
        assert nakama.project("bob-app")["status"] == "running"
        assert not list((nakama.data_dir / "apps" / "bob-app").rglob("requirements-data.txt"))


def test_a_huge_pipeline_log_is_read_by_its_tail_and_paged(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    _, alice = user(nakama, "alice")
    _, bob = user(nakama, "bob")
    with alice, bob:
        create(nakama, bob, "bob-app")
        create(nakama, alice, "alice-app")
        [pipeline] = nakama.pipelines("bob-app")
        # A log of 300 MiB, as one left by a build before logs were capped.
        path = nakama.data_dir / "logs" / "pipelines" / "bob-app" / f"{pipeline['id']}.log"
        with path.open("ab") as f:
            line = b"0123456789" * 10 + b"\n"
            block = line * (MiB // len(line))
            for _ in range(300):
                f.write(block)
            f.write("the end of the build: é\n".encode())
        size = path.stat().st_size
        memory = memory_mib(nakama)
        url = f"/api/v1/projects/bob-app/pipelines/{pipeline['id']}/log"
        times = []
        for _ in range(5):
            started = time.monotonic()
            tail = bob.get(url)
            times.append(time.monotonic() - started)
        assert tail.status_code == 200
        assert int(tail.headers["X-Log-Size"]) == size
        assert int(tail.headers["X-Log-End"]) == size
        assert int(tail.headers["X-Log-Start"]) == size - MiB
        assert tail.text.startswith(f"--- the first {size - MiB} bytes of this log are left out")
        assert tail.text.endswith("the end of the build: é\n")
        assert len(tail.content) < MiB + 200

        page = bob.get(url, params={"offset": 0, "max_bytes": 1000})
        assert page.headers["X-Log-Start"] == "0" and page.headers["X-Log-End"] == "1000"
        assert page.text.startswith(f"pipeline {pipeline['id']}:")
        assert len(page.content) == 1000
        too_much = bob.get(url, params={"max_bytes": 2 * MiB})
        assert too_much.status_code == 422
        assert "NAKAMA_LOGS__PIPELINE_LOG_READ_BYTES" in too_much.json()["detail"]
        assert alice.get(url).status_code == 404  # bob's log is not alice's to read

        # The live log of the page: the tail in events of at most 64 KiB, then the end.
        browser = Browser(nakama)
        try:
            assert browser.sign_in("bob", PASSWORD).status_code == 303
            with browser.http.stream("GET", f"/projects/bob-app/pipelines/{pipeline['id']}"
                                     "/log/events", timeout=60) as stream:  # fmt: skip
                events = [event for event, _ in sse_events(stream)]
        finally:
            browser.close()
        logs = [json.loads(e["data"])["text"] for e in events if e.get("event") == "log"]
        assert events[-1]["event"] == "end"
        assert logs[0].startswith("--- the first")
        assert all(len(text.encode()) <= 64 * 1024 + 200 for text in logs)
        assert "".join(logs).endswith("the end of the build: é\n")
        assert int(events[-2]["id"]) == size

        after = memory_mib(nakama)
        print(
            f"\n{size / MiB:.0f} MiB log: tail read in {statistics.median(times) * 1000:.1f} ms "
            f"(median of 5), {len(logs)} stream events; VmHWM {memory['VmHWM']:.0f} -> "
            f"{after['VmHWM']:.0f} MiB"
        )
        assert max(times) < 2
        assert after["VmHWM"] - memory["VmHWM"] < 100, "the log was read whole"


SLOW_APP = "import time\ntime.sleep(45)\n"


def test_bob_holds_at_most_his_share_of_log_streams_and_they_cost_alice_nothing(
    nakama: NakamaProcess, tmp_path: Path
) -> None:
    alice_token, alice = user(nakama, "alice")
    bob_token, bob = user(nakama, "bob")
    with alice, bob:
        create(nakama, alice, "alice-app")
        create(nakama, bob, "bob-app")
        # Bob's push of an app that takes long to start: its pipeline runs for a while.
        work = clone_as(nakama, bob_token, "bob-app", tmp_path / "bob")
        app = work / "app.py"
        app.write_text(SLOW_APP + app.read_text())
        git("commit", "-qam", "slow start", cwd=work)
        git_push(work)
        commit = git("rev-parse", "HEAD", cwd=work)

        def running_pipeline() -> dict[str, Any] | None:
            return next(
                (p for p in nakama.pipelines("bob-app")
                 if p["commit"] == commit and p["status"] == "running"),
                None,
            )  # fmt: skip

        pipeline = wait_for(running_pipeline, timeout=60, what="bob's pipeline to run")
        browser = Browser(nakama)
        assert browser.sign_in("bob", PASSWORD).status_code == 303
        cookies = dict(browser.http.cookies)
        browser.close()
        path = f"/projects/bob-app/pipelines/{pipeline['id']}/log/events"

        def probe(label: str) -> list[float]:
            times = []
            for _ in range(30):
                started = time.monotonic()
                assert alice.get("/api/v1/projects").status_code == 200
                times.append(time.monotonic() - started)
                time.sleep(0.05)
            print(f"{label}: median {statistics.median(times) * 1000:.1f} ms, "
                  f"max {max(times) * 1000:.1f} ms")  # fmt: skip
            return times

        print()
        baseline = probe("alice's GET /api/v1/projects, no streams")

        async def attack() -> tuple[list[int], list[str], list[float]]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(
                base_url=nakama.url, cookies=cookies, timeout=60, limits=limits
            ) as client:
                held: list[Any] = []
                codes, refusals = [], []
                for _ in range(10):
                    response = await client.send(client.build_request("GET", path), stream=True)
                    codes.append(response.status_code)
                    held.append(response)

                async def one_more() -> None:
                    response = await client.get(path)
                    codes.append(response.status_code)
                    if response.status_code == 429:
                        refusals.append(response.json()["detail"])

                # 100 more attempts while alice works.
                attempts = asyncio.gather(*(one_more() for _ in range(100)))
                during = await asyncio.to_thread(probe, "with bob's 10 streams and 100 more tries")
                await attempts
                # A stream closed frees its place.
                await held.pop().aclose()
                for _ in range(50):
                    again = await client.send(client.build_request("GET", path), stream=True)
                    if again.status_code == 200:
                        break
                    await again.aclose()
                    await asyncio.sleep(0.1)
                codes.append(again.status_code)
                held.append(again)
                for response in held:
                    await response.aclose()
                return codes, refusals, during

        codes, refusals, during = asyncio.run(attack())
        assert codes[:10] == [200] * 10
        assert codes[10:110] == [429] * 100, "bob opened more streams than his share"
        assert codes[-1] == 200, "a closed stream's place was not freed"
        assert "NAKAMA_LOGS__STREAMS_PER_USER" in refusals[0]
        assert statistics.median(during) < statistics.median(baseline) * 3 + 0.03
        assert max(during) < 1.0
        alice_page = Browser(nakama)
        try:  # alice's own stream is not counted against bob's
            assert alice_page.sign_in("alice", PASSWORD).status_code == 303
            [alice_pipeline] = nakama.pipelines("alice-app")
            with alice_page.http.stream(
                "GET", f"/projects/alice-app/pipelines/{alice_pipeline['id']}/log/events"
            ) as stream:
                assert stream.status_code == 200
        finally:
            alice_page.close()
        assert alice_token
