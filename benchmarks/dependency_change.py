"""Dependency change with a warm uv cache: from ``git push`` to the app running on a new env.

What is measured: a throw-away ``nakama up`` (see ``_harness.py``) with
``NAKAMA_BUILDER__UV_CACHE_DIR`` inside its temp dir gets one project made from a tiny stdlib HTTP
app that answers ``<VERSION> six=<six.__version__>``. Warm-up (untimed): one build per package
set used below (``six==1.16.0`` and ``six==1.17.0``), which fills the uv cache (this needs the
package index once). Then ``--runs`` times (default 5) the script writes a requirements.txt that
alternates between those pinned sets and carries a comment line with a counter, so every push has
a NEW dependency hash (a full environment build) whose packages uv finds in its cache. It
commits, starts the clock, runs ``git push`` and polls the app URL every 10 ms until it answers
the new VERSION with the expected six version, i.e. the app runs on the new environment.
Target: median <= 5 s.

The breakdown uses Nakama's timestamps as ``push_to_live.py`` does; here the ``finished`` step is
mostly the environment build (``uv venv`` + ``uv pip install`` from cache).

Run: ``python benchmarks/dependency_change.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._harness import (
    create_project,
    fmt_stats,
    machine_note,
    percentile,
    print_breakdown,
    running_nakama,
    timed_push,
)
from tests.e2e.nakama_server import clone, set_version

PROJECT = "bench-deps"
TARGET_S = 5.0
SIX_VERSIONS = ("1.16.0", "1.17.0")
WARM_TIMEOUT_S = 600.0  # the warm-up builds may download from the index
RUN_TIMEOUT_S = 120.0


def requirements(six: str, counter: str) -> str:
    return f"six=={six}\n# benchmark run {counter}\n"


def build_log(server: Any, pipeline_id: int) -> list[str]:
    """The pipeline's log (what was built, uv's own timings), at most 25 lines."""
    text = server.api.get(f"/api/v1/projects/{PROJECT}/pipelines/{pipeline_id}/log").text
    return text.splitlines()[:25]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed dependency pushes (default 5)")
    args = ap.parse_args()
    runs = max(1, min(args.runs, 100))

    results: list[dict] = []
    with running_nakama("deps", uv_cache=True) as server, httpx.Client(timeout=2) as client:
        project = create_project(server, PROJECT)
        app_url = project["app_url"]
        work = clone(server, PROJECT, server.tmp / "work")
        plan = [(f"warm{i}", six, False) for i, six in enumerate(SIX_VERSIONS)]
        plan += [(f"d{i}", SIX_VERSIONS[i % len(SIX_VERSIONS)], True) for i in range(runs)]
        for version, six, timed in plan:
            (work / "requirements.txt").write_text(requirements(six, version))
            set_version(work, version)
            t = time.monotonic()
            r = timed_push(
                server,
                PROJECT,
                work,
                message=version,
                app_url=app_url,
                expected=f"{version} six={six}",
                client=client,
                live_timeout=RUN_TIMEOUT_S if timed else WARM_TIMEOUT_S,
            )
            if r["kind"] != "build":
                raise RuntimeError(f"{version}: expected a build, got {r['kind']}: {r['reason']}")
            if not timed:
                print(f"warm-up build six=={six}: {time.monotonic() - t:.1f}s", flush=True)
                continue
            results.append(r)
            print(
                f"run {len(results):>3}/{runs}: live {r['live']:.3f}s  push {r['push']:.3f}s  "
                f"build job {r['finished'] - r['started']:.3f}s  six=={six}  "
                f"({r['kind']}/{r['status']})",
                flush=True,
            )
        last = server.pipelines(PROJECT)[0]
        log_lines = build_log(server, last["id"])

    live = [r["live"] for r in results]
    push = [r["push"] for r in results]
    job = [r["finished"] - r["started"] for r in results]
    print()
    print("=== dependency_change: new requirements.txt (cached packages) -> app on new env ===")
    print(machine_note())
    print(
        f"runs={len(results)}  every push a new dependency hash; six alternates "
        f"{' / '.join(SIX_VERSIONS)}"
    )
    print(f"push-to-live   {fmt_stats(live)}")
    print(f"git push       {fmt_stats(push)}")
    print(f"build job      {fmt_stats(job)}")
    verdict = "MET" if percentile(live, 50) <= TARGET_S else "MISSED"
    print(f"target         median <= {TARGET_S:.3f}s -> {verdict}")
    print_breakdown(results)
    if log_lines:
        print("the last build's log:")
        for line in log_lines:
            print(f"  {line[:150]}")
    print(
        f"RESULT dependency_change median={percentile(live, 50):.3f}s "
        f"p90={percentile(live, 90):.3f}s min={min(live):.3f}s max={max(live):.3f}s "
        f"build_job_median={percentile(job, 50):.3f}s runs={len(results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
