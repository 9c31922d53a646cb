"""Webhook intake under 64 concurrent connections: stored events per second and latency.

What is measured: a throw-away ``nakama up`` (see ``_harness.py``) gets one project; its hook
token is read from ``<data>/nakama.db`` (``projects.hook_token``). ``wrk -t2 -c64 -d<N>s
--latency`` then POSTs GitLab's reference Push Hook body (shared/reference/gitlab/webhooks/
push_hook.json, with ``project.path_with_namespace`` set to the project and ``ref`` set to
``refs/heads/some-other-branch`` so the processor ignores the events quickly) to
``/code-reload/<project>`` with ``X-Gitlab-Event: Push Hook``, the ``X-Gitlab-Token`` and a
unique ``Idempotency-Key`` per request (thread id + counter, made in Lua). From wrk: requests/s,
p50/p90/p99 latency, non-2xx. Then the rows wrk's requests added to ``webhook_events`` are
counted: stored rows / duration is the figure that matters (targets: >= 1,000 stored events/s,
p99 <= 50 ms).

For scale, the identical wrk load is run against a bare uvicorn (a minimal ASGI app that reads
the body and answers 202; same ``uvicorn.run`` settings as ``nakama up``) and shown side by side.

``--profile`` adds one more pass against Nakama under ``py-spy record`` (``pip install py-spy``) and
prints busy samples per thread, the functions with the most own (leaf) samples and the project
functions under which the most time is spent (see ``_pyspy.py``); the headline figures are
never taken while profiling. The server's CPU time during each pass is read from /proc.

Run: ``python benchmarks/webhook_intake.py [--duration 10] [--profile]`` (``--runs`` repeats
the Nakama pass; each pass starts on the same server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._harness import (
    REPO_ROOT,
    create_project,
    machine_note,
    percentile,
    query,
    running_nakama,
    wait_for,
)
from benchmarks._pyspy import profile_summary, py_spy_record
from benchmarks._wrk import WRK_LUA, loaded, lua_str, run_wrk
from tests.support import free_port

PROJECT = "bench-hook"
BARE_APP = Path(__file__).with_name("_bare_asgi.py")
REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "gitlab" / "webhooks" / "push_hook.json"


def push_body(name: str) -> bytes:
    data = json.loads(REFERENCE.read_text())
    data.pop("_comment", None)
    data["ref"] = "refs/heads/some-other-branch"
    data["project"]["path_with_namespace"] = f"local/{name}"
    data["project"]["name"] = name
    return json.dumps(data).encode()


def stored_rows(server, prefix: str) -> int:
    return int(
        query(
            server,
            "SELECT COUNT(*) FROM webhook_events WHERE dedup_key LIKE ?",
            (f"code-reload:{PROJECT}:{prefix}%",),
        )[0][0]
    )


def bare_baseline(tmp: Path, lua: Path, duration: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(BARE_APP), str(port)])
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=30, what="bare uvicorn")
        return loaded(proc.pid, f"http://127.0.0.1:{port}/code-reload", lua, duration)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.post(url, content=b"{}", timeout=1).status_code == 202
    except httpx.HTTPError:
        return False


def line(label: str, r: dict, stored: int | None = None) -> str:
    s = (
        f"{label:<13}{r['rps']:>9.0f} req/s   p50 {r['p50']:6.1f}ms  p90 {r['p90']:6.1f}ms  "
        f"p99 {r['p99']:6.1f}ms   non-2xx {r['non2xx']}  socket errors {r['socket_errors']}"
    )
    if "cpu_s" in r:
        s += (
            f"   server CPU {100 * r['cpu_s'] / r['seconds']:.0f}% "
            f"= {1000 * r['cpu_s'] / max(1, r['requests']):.2f}ms/req"
        )
    if stored is not None:
        s += f"   stored {stored} = {stored / r['seconds']:.0f} events/s"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--runs", type=int, default=1, help="wrk passes against Nakama (default 1)")
    ap.add_argument("--profile", action="store_true", help="extra pass under py-spy record")
    ap.add_argument("--verbose", action="store_true", help="print wrk's own output too")
    args = ap.parse_args()
    duration, runs = max(1, min(args.duration, 120)), max(1, min(args.runs, 10))
    if args.profile and not shutil.which("py-spy"):
        sys.exit("--profile needs py-spy: pip install py-spy")

    passes, profile = [], []
    with running_nakama("intake") as server:
        create_project(server, PROJECT)
        token = query(server, "SELECT hook_token FROM projects WHERE name = ?", (PROJECT,))[0][0]
        body = push_body(PROJECT)
        check = httpx.post(
            f"{server.url}/code-reload/{PROJECT}",
            content=body,
            timeout=10,
            headers={
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": token,
                "Idempotency-Key": "check",
            },
        )
        if check.status_code != 202:
            raise RuntimeError(f"pre-flight delivery got {check.status_code}: {check.text}")
        tmp = server.tmp
        for i in range(runs + (1 if args.profile else 0)):
            prefix = f"bench{i}-{os.getpid()}-"
            lua = tmp / f"push{i}.lua"
            lua.write_text(
                WRK_LUA.format(
                    body=lua_str(body.decode()), token=lua_str(token), prefix=lua_str(prefix)
                )
            )
            if i == runs:  # the profiled pass
                raw = tmp / "profile.txt"
                with py_spy_record(server.proc.pid, raw, duration=duration):
                    r = run_wrk(f"{server.url}/code-reload/{PROJECT}", lua, duration=duration)
                profile = profile_summary(raw, REPO_ROOT)
                if os.environ.get("KEEP_PROFILE"):
                    shutil.copy(raw, os.environ["KEEP_PROFILE"])
                profile.insert(0, f"(profiled pass: {line('', r, stored_rows(server, prefix))})")
                continue
            r = loaded(server.proc.pid, f"{server.url}/code-reload/{PROJECT}", lua, duration)
            passes.append((r, stored_rows(server, prefix)))
            if args.verbose:
                print(r["raw"])
            print(line(f"nakama #{i + 1}", r, passes[-1][1]), flush=True)
        base_lua = tmp / "push0.lua"
        bare = bare_baseline(tmp, base_lua, duration)

    stored_rates = [n / r["seconds"] for r, n in passes]
    p99s = [r["p99"] for r, _ in passes]
    print()
    print(f"=== webhook_intake: wrk -t2 -c64 -d{duration}s POST /code-reload/<project> ===")
    print(machine_note())
    for i, (r, n) in enumerate(passes):
        print(line(f"nakama #{i + 1}", r, n))
    print(line("bare uvicorn", bare))
    rate, p99 = percentile(stored_rates, 50), percentile(p99s, 50)
    print(
        f"targets: stored >= 1000 events/s -> {'MET' if rate >= 1000 else 'MISSED'} ({rate:.0f});"
        f" p99 <= 50ms -> {'MET' if p99 <= 50 else 'MISSED'} ({p99:.1f}ms)"
    )
    timeouts = sum(r["timeouts"] for r, _ in passes)
    if timeouts:
        print(
            f"note: {timeouts} request(s) got no answer within wrk's 2 s timeout; wrk leaves them "
            "out of its latency figures, so the real p99 is worse (their events may be stored)"
        )
    if profile:
        print()
        print("py-spy profile of nakama up during the load:")
        print("\n".join(profile))
    p50 = percentile([r["p50"] for r, _ in passes], 50)
    rps = percentile([r["rps"] for r, _ in passes], 50)
    print(
        f"RESULT webhook_intake median={p50 / 1000:.4f}s p99={p99 / 1000:.4f}s "
        f"stored_events_per_s={rate:.0f} nakama_rps={rps:.0f} "
        f"bare_uvicorn_rps={bare['rps']:.0f} bare_p99={bare['p99'] / 1000:.4f}s "
        f"non2xx={sum(r['non2xx'] for r, _ in passes)} "
        f"timeouts={sum(r['timeouts'] for r, _ in passes)} runs={len(passes)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
