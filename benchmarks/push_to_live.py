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
``python -S -c "import backend.local.post_receive"``: the hook's share of every push.

Run: ``python benchmarks/push_to_live.py [--runs N] [--warmup N]``.

``--restore N`` measures the other start-up path instead: N projects (default 20, the tiny app)
are created and deployed, then ``nakama up`` is stopped and started again, twice: first with
``NAKAMA_JOBS__RESTORE_WORKERS=1`` (the apps one after another, the baseline) and then with the
default (target: all N serving <= 1.5 s after the restart's /healthz answers). Each figure is
the time from /healthz answering (the restore runs in a thread from then on) until the last app
answered its own address; the time from the launch of ``nakama up`` is printed too.

``--kit streamlit --strategy restart|live`` measures the real Streamlit starter kit instead
(``app_starter_kit/``; the first build installs Streamlit from the package index into a uv cache in
the temp dir). One Chromium tab stays open on the app. Each run (default 7, no warm-up) changes the
``st.title("...")`` text in app.py, commits, starts the clock and pushes, then measures

* new session: until a NEW browser context (a new Streamlit session) renders the new title in its
  <h1>. Sessions are opened one after another until one does (those that render the old title or
  find the port closed are dropped), so this includes one page load: the page load of the
  unchanged app (median of 5, printed) is the part to subtract;
* open tab: until the tab that was open before the push shows the new title, given up after 20 s
  ("not updated"; the tab is then reloaded, untimed, so every run starts from a tab showing the
  current version).

The times come from the page itself (a MutationObserver writes down ``Date.now()`` when each <h1>
text first appears; see ``_streamlit.py``), plus the same Nakama milestones as above.
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
    _free_port_range,
    create_project,
    fmt_stats,
    git,
    machine_note,
    milestones,
    percentile,
    print_breakdown,
    push_commit,
    running_nakama,
    timed_push,
)
from tests.e2e.nakama_server import clone, gateway_target, set_version

PROJECT = "bench-push"
TARGET_S = 1.5
COLD_BUILD_S = 300  # the real kit's first build installs Streamlit, numpy and pandas
OPEN_TAB_WAIT_S = 20  # an open tab that has not shown the new title by then "did not update"
NEW_SESSION_WAIT_S = 60
PAGE_LOADS = 5


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
    ap.add_argument(
        "--kit",
        choices=["tiny", "streamlit"],
        default="tiny",
        help="tiny stdlib app (default) or the real Streamlit starter kit",
    )
    ap.add_argument(
        "--strategy",
        choices=["restart", "live"],
        help="with --kit streamlit: NAKAMA_RUNTIME__RELOAD_STRATEGY (default restart)",
    )
    ap.add_argument(
        "--restore", type=int, metavar="N", help="time the restart of N deployed apps instead"
    )
    ap.add_argument("--runs", type=int, help="timed pushes (default 15; 7 with --kit streamlit)")
    ap.add_argument("--warmup", type=int, help="untimed pushes first (default 1; 0 with streamlit)")
    args = ap.parse_args()
    streamlit = args.kit == "streamlit"
    if args.restore is not None:
        return restore(max(1, min(args.restore, 200)))
    if args.strategy and not streamlit:
        ap.error("--strategy needs --kit streamlit (the tiny app is always restarted)")
    runs = args.runs if args.runs is not None else (7 if streamlit else 15)
    warmup = args.warmup if args.warmup is not None else (0 if streamlit else 1)
    runs, warmup = max(1, min(runs, 100 if streamlit else 500)), max(0, min(warmup, 10))
    if streamlit:
        return streamlit_push_to_live(args.strategy or "restart", runs, warmup)
    return tiny_push_to_live(runs, warmup)


RESTORE_TARGET_S = 1.5


def rss_mib(pid: int) -> float:
    """Resident memory of one process (not its children: the apps have their own)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def restore(count: int) -> int:
    """Create ``count`` apps, then restart nakama up with 1 restore worker and with the
    default; how long until every app serves again, each time."""
    first = _free_port_range(count + 10)
    env = {
        "NAKAMA_RUNTIME__PORT_RANGE_START": str(first),
        "NAKAMA_RUNTIME__PORT_RANGE_END": str(first + count + 9),
        "NAKAMA_QUOTAS__PROJECTS_PER_USER": str(count + 10),
        "NAKAMA_QUOTAS__RUNNING_APPS_PER_USER": str(count + 10),
    }
    figures: dict[str, float] = {}
    launch: dict[str, float] = {}
    with running_nakama("restore", extra_env=env) as server, httpx.Client(timeout=2) as client:
        t = time.monotonic()
        urls = [create_project(server, f"app{i:03d}")["app_url"] for i in range(count)]
        print(f"{count} projects created and deployed in {time.monotonic() - t:.1f}s", flush=True)
        for label, workers in (("one after another", "1"), ("in parallel (default)", None)):
            server.stop()
            if workers is None:
                server.env.pop("NAKAMA_JOBS__RESTORE_WORKERS", None)
            else:
                server.env["NAKAMA_JOBS__RESTORE_WORKERS"] = workers
            launched = time.monotonic()
            server.start()  # returns once /healthz answers
            t0 = time.monotonic()
            waiting = set(urls)
            while waiting and time.monotonic() - t0 < 120:
                for url in list(waiting):
                    target, headers = gateway_target(url)
                    try:
                        if client.get(target, headers=headers).status_code == 200:
                            waiting.discard(url)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.01)
            if waiting:
                raise RuntimeError(f"{len(waiting)} apps did not come back in 120 s")
            figures[label] = time.monotonic() - t0
            launch[label] = time.monotonic() - launched
            print(
                f"restart, {label}: all {count} serving {figures[label]:.2f}s after /healthz "
                f"({launch[label]:.2f}s after the launch)",
                flush=True,
            )
        time.sleep(2)  # let the start-up's garbage settle
        rss = rss_mib(server.proc.pid) if server.proc is not None else float("nan")
    parallel = figures["in parallel (default)"]
    baseline = figures["one after another"]
    verdict = "MET" if parallel <= RESTORE_TARGET_S else "MISSED"
    print()
    print(f"=== restore: nakama up restarted with {count} deployed apps ===")
    print(machine_note())
    serial_launch, parallel_launch = launch["one after another"], launch["in parallel (default)"]
    print(f"one after another (NAKAMA_JOBS__RESTORE_WORKERS=1): {baseline:.2f}s after /healthz")
    print(f"in parallel (default workers):                    {parallel:.2f}s after /healthz")
    print(
        f"from the launch of nakama up: {serial_launch:.2f}s one after another, "
        f"{parallel_launch:.2f}s in parallel"
    )
    print(
        f"target <= {RESTORE_TARGET_S:.1f}s -> {verdict}; {baseline / parallel:.1f}x as fast as"
        " the baseline"
    )
    print(f"nakama up's own RSS with {count} apps running: {rss:.0f} MiB (target <= 100 MB)")
    print(
        f"RESULT restore apps={count} serial={baseline:.2f}s parallel={parallel:.2f}s "
        f"rss_mib={rss:.0f}"
    )
    return 0


def tiny_push_to_live(runs: int, warmup: int) -> int:
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
        plan = [(f"warm{i}", False) for i in range(warmup)]
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
    imports = python_times("import backend.local.post_receive")
    print(f"  python -S + import backend.local.post_receive: {fmt_stats(imports)}")
    print(
        f"RESULT push_to_live median={percentile(live, 50):.3f}s "
        f"p90={percentile(live, 90):.3f}s min={min(live):.3f}s max={max(live):.3f}s "
        f"git_push_median={percentile(push, 50):.3f}s job_median={percentile(job, 50):.3f}s "
        f"runs={len(results)}"
    )
    return 0


def streamlit_push_to_live(strategy: str, runs: int, warmup: int) -> int:
    from benchmarks._streamlit import (  # needs Playwright; the tiny app does not
        chromium,
        current_title,
        first_new_session,
        open_session,
        page_load,
        set_title,
        wait_title,
    )

    results: list[dict] = []
    loads: list[float] = []
    env = {"NAKAMA_RUNTIME__RELOAD_STRATEGY": strategy}
    nakama = running_nakama(f"push-st-{strategy}", uv_cache=True, real_kit=True, extra_env=env)
    with nakama as server, chromium() as browser:
        t = time.monotonic()
        project = create_project(server, PROJECT, timeout=COLD_BUILD_S)
        print(
            f"project created, Streamlit environment built and first version deployed in "
            f"{time.monotonic() - t:.1f}s (reload strategy {strategy})",
            flush=True,
        )
        app_url = project["app_url"]
        # The browser opens the app at its own address through the gateway, without sign-in.
        server.api.patch(f"/api/v1/projects/{PROJECT}", json={"visibility": "public"})
        work = clone(server, PROJECT, server.tmp / "work")
        app_py = work / "app.py"
        title = current_title(app_py)
        tab = open_session(browser, app_url, timeout_ms=30_000)
        if wait_title(tab, title, timeout=60) is None:
            raise RuntimeError(f"the open tab never rendered {title!r}: {tab.titles()}")
        loads = [page_load(browser, app_url, title) for _ in range(PAGE_LOADS)]
        print(f"page load, unchanged app, {PAGE_LOADS}x: {fmt_stats(loads)}", flush=True)

        plan = [(f"warm{i}", False) for i in range(warmup)]
        plan += [(f"r{i}", True) for i in range(runs)]
        for label, timed in plan:
            title = f"Push {label} {time.time_ns() % 10**9}"
            set_title(app_py, title)
            sha, t0, t_push = push_commit(work, f"retitle {label}")
            new = first_new_session(
                browser, app_url, title, deadline=time.monotonic() + NEW_SESSION_WAIT_S
            )
            if new.rendered is None or new.opened is None:
                raise RuntimeError(
                    f"no new session rendered {title!r} within {NEW_SESSION_WAIT_S}s after "
                    f"{new.attempts} attempts ({new.stale[-3:]}); "
                    f"pipelines: {server.pipelines(PROJECT)[:2]}"
                )
            seen = wait_title(tab, title, timeout=max(0.0, t0 + OPEN_TAB_WAIT_S - time.time()))
            tab_s = seen - t0 if seen is not None and seen - t0 <= OPEN_TAB_WAIT_S else None
            if tab_s is None:  # start the next run from a tab that shows the current version
                tab.page.reload(wait_until="commit", timeout=30_000)
                if wait_title(tab, title, timeout=60) is None:
                    raise RuntimeError(f"the reloaded tab never rendered {title!r}")
            if not timed:
                continue
            r = {
                **milestones(server, PROJECT, sha, t0),
                "push": t_push - t0,
                "live": new.rendered - t0,
                "opened": new.opened - t0,
                "attempts": new.attempts,
                "tab": tab_s,
            }
            results.append(r)
            tab_text = f"{tab_s:.3f}s" if tab_s is not None else "not updated"
            print(
                f"run {len(results):>3}/{runs}: new session {r['live']:.3f}s "
                f"(opened at {r['opened']:.3f}s, attempt {new.attempts})  open tab {tab_text}  "
                f"push {r['push']:.3f}s  job {r['finished'] - r['started']:.3f}s  "
                f"({r['kind']}/{r['status']})  earlier sessions: {new.stale_summary()}",
                flush=True,
            )
            for what in new.stale:
                if what.startswith("blank"):
                    print(f"          {what}", flush=True)

    new_session = [r["live"] for r in results]
    opened = [r["opened"] for r in results]
    tab_times = [r["tab"] for r in results if r["tab"] is not None]
    push = [r["push"] for r in results]
    job = [r["finished"] - r["started"] for r in results]
    kinds = sorted({f"{r['kind']}/{r['status']}" for r in results})
    reasons = sorted({r["reason"] for r in results})
    updated = f"{len(tab_times)}/{len(results)}"
    print()
    print(f"=== push_to_live, Streamlit starter kit, reload strategy {strategy}: ===")
    print("=== code-only push (new st.title) -> new title rendered in Chromium ===")
    print(machine_note())
    print(f"runs={len(results)}  pipelines: {', '.join(kinds)}  reasons: {'; '.join(reasons)}")
    print(f"page load, unchanged app ({PAGE_LOADS}x, new context -> <h1> rendered):")
    print(f"               {fmt_stats(loads)}")
    print(f"new session    {fmt_stats(new_session)}")
    print(f"  opened at    {fmt_stats(opened)}  (the context that got it; the rest is its load)")
    print(f"  attempts     {[r['attempts'] for r in results]}  (sessions opened per run)")
    if tab_times:
        print(f"open tab       {fmt_stats(tab_times)}  updated {updated} within {OPEN_TAB_WAIT_S}s")
    else:
        print(f"open tab       not updated within {OPEN_TAB_WAIT_S}s in any run (0/{len(results)})")
    print(f"git push       {fmt_stats(push)}")
    print(f"reload job     {fmt_stats(job)}  (pipeline started -> finished)")
    print_breakdown(results, live_label="new title rendered in a new browser session")
    tab_median = f"{percentile(tab_times, 50):.3f}s" if tab_times else "n/a"
    print(
        f"RESULT push_to_live_streamlit_{strategy} median={percentile(new_session, 50):.3f}s "
        f"p90={percentile(new_session, 90):.3f}s min={min(new_session):.3f}s "
        f"max={max(new_session):.3f}s open_tab_median={tab_median} "
        f"open_tab_updated={updated} page_load_median={percentile(loads, 50):.3f}s "
        f"job_median={percentile(job, 50):.3f}s runs={len(results)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
