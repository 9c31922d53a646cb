"""Code-only push to live: how long from ``git push`` until the app serves the new code.

What is measured: a throw-away ``nakama up`` (see ``_harness.py``: temp data dir, free port, a tiny
stdlib HTTP app as the starter kit) gets one project, which is cloned over HTTP. Then ``--runs``
times (default 15, after ``--warmup`` untimed pushes) the script changes ``VERSION`` in app.py,
commits, starts the clock, runs ``git push`` and polls the app URL every 10 ms until it answers
the new VERSION. That time is "push to live" (target: median <= 1.5 s).

Where the time goes, per run, relative to the moment ``git push`` was started (Nakama's timestamps
are wall-clock on the same machine):

* ``hook``     first webhook event of the push stored (``webhook_events.received_at``):
               git transfer + receive-pack + the post-receive hook building and POSTing it;
* ``planned``  the reload pipeline created (``pipelines.created_at``): event processing;
* ``started``  the pipeline claimed by a job runner (``started_at``): queue wait;
* ``finished`` the pipeline finished (``finished_at``): checkout + app restart + health check;
* ``push``     ``git push`` returned to the user (it waits for the hook's POSTs);
* ``live``     the new VERSION first seen on the app URL.

To split ``hook`` further, after the runs the repository's post-receive hook is run by hand a
few times (for a non-deploy branch, so Nakama stores and ignores the events), and so is a bare
``python -S -c "import nakama.local.post_receive"``: the hook's share of every push.

Run: ``python benchmarks/push_to_live.py [--runs N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._harness import (
    REPO_ROOT,
    create_project,
    fmt_stats,
    git,
    machine_note,
    percentile,
    print_breakdown,
    running_nakama,
    set_version,
    timed_push,
)
from tests.e2e.nakama_server import clone

PROJECT = "bench-push"
TARGET_S = 1.5


def time_hook(server: Any, work: Path, times: int = 5) -> list[float]:
    """Run the repository's post-receive hook by hand, as git does, for a ref to a non-deploy
    branch (Nakama stores and ignores those events): what the hook alone costs a push."""
    repo = server.data_dir / "git" / f"{PROJECT}.git"
    head, parent = git("rev-parse", "HEAD", cwd=work), git("rev-parse", "HEAD~1", cwd=work)
    line = f"{parent} {head} refs/heads/bench-hook-timing\n"
    env = {**os.environ, "GIT_DIR": str(repo)}
    took = []
    for _ in range(times):
        t = time.perf_counter()
        subprocess.run(
            [str(repo / "hooks" / "post-receive")],
            input=line,
            text=True,
            env=env,
            cwd=repo,
            capture_output=True,
            timeout=30,
            check=True,
        )
        took.append(time.perf_counter() - t)
    return took


def python_times(code: str, times: int = 7) -> list[float]:
    """``python -S -c code`` wall time, with the hook's PYTHONPATH (the repository root), run
    outside the repository as the hook is (in the bare repository)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    took = []
    for _ in range(times):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-S", "-c", code],
            input="",
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=30,
            check=True,
        )
        took.append(time.perf_counter() - t)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed pushes (default 15)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed pushes first (default 1)")
    args = ap.parse_args()
    runs = max(1, min(args.runs, 500))

    results: list[dict] = []
    hook_alone: list[float] = []
    with running_nakama("push") as server, httpx.Client(timeout=2) as client:
        t = time.monotonic()
        project = create_project(server, PROJECT)
        print(
            f"project created and first version deployed in {time.monotonic() - t:.1f}s", flush=True
        )
        app_url = project["app_url"]
        work = clone(server, PROJECT, server.tmp / "work")
        plan = [(f"warm{i}", False) for i in range(max(0, min(args.warmup, 10)))]
        plan += [(f"r{i}", True) for i in range(runs)]
        for version, timed in plan:
            set_version(work, version)
            r = timed_push(
                server,
                PROJECT,
                work,
                message=version,
                app_url=app_url,
                expected=version,
                client=client,
            )
            if not timed:
                continue
            results.append(r)
            print(
                f"run {len(results):>3}/{runs}: live {r['live']:.3f}s  push {r['push']:.3f}s  "
                f"job {r['finished'] - r['started']:.3f}s  ({r['kind']}/{r['status']})",
                flush=True,
            )
        hook_alone = time_hook(server, work)

    live = [r["live"] for r in results]
    push = [r["push"] for r in results]
    job = [r["finished"] - r["started"] for r in results]
    kinds = sorted({f"{r['kind']}/{r['status']}" for r in results})
    print()
    print("=== push_to_live: code-only push -> new VERSION served ===")
    print(machine_note())
    print(f"runs={len(results)}  pipelines: {', '.join(kinds)}  poll interval 10ms")
    print(f"push-to-live   {fmt_stats(live)}")
    print(f"git push       {fmt_stats(push)}")
    print(f"reload job     {fmt_stats(job)}")
    verdict = "MET" if percentile(live, 50) <= TARGET_S else "MISSED"
    print(f"target         median <= {TARGET_S:.3f}s -> {verdict}")
    print_breakdown(results)
    print(f"post-receive hook run alone, {len(hook_alone)}x (python start + imports + git log +")
    print(f"  2 POSTs; a non-deploy ref): {fmt_stats(hook_alone)}")
    print(f"  of which python -S start: {fmt_stats(python_times('pass'))}")
    imports = python_times("import nakama.local.post_receive")
    print(f"  python -S + import nakama.local.post_receive: {fmt_stats(imports)}")
    print(
        f"RESULT push_to_live median={percentile(live, 50):.3f}s "
        f"p90={percentile(live, 90):.3f}s min={min(live):.3f}s max={max(live):.3f}s "
        f"git_push_median={percentile(push, 50):.3f}s job_median={percentile(job, 50):.3f}s "
        f"runs={len(results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
