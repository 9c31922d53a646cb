"""A stranger flooding a real ``nakama up`` with 1 MiB hook bodies and wrong tokens gets only
401s, and everyone else's requests keep being answered (review M7: every body was once parsed on
the event loop before its token was looked at). How fast they are answered meanwhile is measured
by ``benchmarks/receiver_flood.py``, against the same probe before the flood.

The senders run in a process of their own, so that their work is not counted in the probe's
answer times."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import NakamaProcess, running

SENDERS = 8
FLOOD_S = 6.0

# Eight threads posting 1 MiB bodies with a wrong token: the review's body of `{}` items, and
# the same naming Alice's project, to the URLs without and with the project in them.
FLOOD = r"""
import http.client, sys, threading, time
port, project, seconds, senders = int(sys.argv[1]), sys.argv[2], *map(float, sys.argv[3:5])
items = ",".join(["{}"] * 349000)
plain = ('{"project":{"name":"x"},"a":[' + items + ']}').encode()
named = ('{"project":{"path_with_namespace":"local/' + project + '"},"a":[' + items + ']}').encode()
targets = [("/build-image", plain), ("/code-reload", named), ("/build-image/" + project, named)]
stop = time.monotonic() + seconds
counts = {}
def send(i):
    path, body = targets[i % len(targets)]
    conn = None
    while time.monotonic() < stop:
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", path, body=body, headers={"X-Gitlab-Token": "nope" * 10,
                         "Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"})
            r = conn.getresponse(); r.read()
            key = r.status
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except (OSError, http.client.HTTPException) as exc:
            key = type(exc).__name__
            conn.close() if conn else None; conn = None
        counts[key] = counts.get(key, 0) + 1
threads = [threading.Thread(target=send, args=(i,)) for i in range(int(senders))]
[t.start() for t in threads]; [t.join() for t in threads]
print(counts)
"""


@pytest.fixture
def nakama(tmp_path: Path, tiny_kit: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    with running(tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache) as server:
        yield server


def probe(url: str, *, seconds: float) -> list[float]:
    """Answer times of /healthz, one request every 20 ms, in seconds."""
    times = []
    stop = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < stop:
            start = time.perf_counter()
            assert client.get(f"{url}/healthz").status_code == 200
            times.append(time.perf_counter() - start)
            time.sleep(0.02)
    return times


def p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10)[-1]


def test_unauthenticated_megabyte_bodies_do_not_slow_healthz(nakama: NakamaProcess) -> None:
    assert nakama.api.post("/api/v1/projects", json={"name": "alice-app"}).status_code == 201
    baseline = probe(nakama.url, seconds=2)
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD, str(nakama.port), "alice-app", str(FLOOD_S), str(SENDERS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # let every sender get going
        during = probe(nakama.url, seconds=FLOOD_S - 2)
    finally:
        out, _ = flood.communicate(timeout=60)
    print(
        f"/healthz p90 {p90(baseline) * 1e3:.1f} ms before, {p90(during) * 1e3:.1f} ms during"
        f" the flood (max {max(during) * 1e3:.1f} ms, {len(during)} probes); answers: {out}"
    )
    assert "401" in out, out  # the flood was answered (a body without a project: 401 too)
    assert "202" not in out and "422" not in out and "500" not in out, out
    assert during, "no probe was answered during the flood"  # and each one was a 200 (probe)
