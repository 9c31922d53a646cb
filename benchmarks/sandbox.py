"""What the app sandbox (bubblewrap, plus a control group per app) costs, against no sandbox,
in the same run.

Measured:

* start-up: the tiny test app (``TINY_APP``) started ``--starts`` times through
  ``backend.local.supervisor.Supervisor`` directly, timed from the ``run()`` call until it returns
  (the app answered HTTP), in three variants, interleaved (each round in another order): plain
  (``Sandbox("off")``, no limits), limits only (``Sandbox("off")`` and the default limits, in a
  cgroup from ``detect()``) and sandboxed (``Sandbox("bwrap")``, a ``Jail`` like the runtime's
  and the limits). Health probes every ``--interval`` s (Nakama's default, 0.05 s, would round
  every start up to its next 50 ms). Target: sandboxed adds <= 50 ms (median).
  Then where a sandboxed start's time goes: ``/bin/true`` bare, under ``env``, ``setpriv``,
  ``bwrap`` alone and the whole wrapper, a fork with ``preexec_fn`` (which the sandbox needs and
  a plain start does not), a cgroup made and removed, and ``python -c pass`` with and without
  the wrapper.
* push to live: two ``nakama up`` at once (see ``_harness.py``), one with the sandbox (the
  default) and one with ``NAKAMA_RUNTIME__SANDBOX=off``, a project of the tiny kit each; then
  ``--rounds`` code-only pushes to each in turn, timed from ``git push`` until the app URL
  serves the new VERSION through the gateway. Target: sandboxed median <= 1.0 s.
* memory: one ``nakama up`` (sandbox on): VmRSS of the server process with 0 apps, then with
  ``--apps`` projects of the tiny kit running, and the sum over all its descendants (per app a
  bubblewrap monitor, the sandbox's PID 1 and the app), with PSS beside it (shared pages split
  among the processes that share them, so sums of it do not count a library twice).

Run: ``python benchmarks/sandbox.py [--rounds 10] [--starts 40] [--apps 20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.local.supervisor import AppSpec, Supervisor, port_is_free
from benchmarks._harness import (
    _free_port_range,
    create_project,
    fmt_stats,
    machine_note,
    percentile,
    running_nakama,
    timed_push,
)
from nakama.clients.cgroups import Limiter, detect
from nakama.clients.sandbox import Jail, Sandbox, ignore_sigterm, python_roots
from nakama.limits import effective_limits
from nakama.settings import LimitsSettings, RuntimeSettings
from tests.e2e.nakama_server import TINY_APP, clone, set_version, wait_for

TARGET_ADDED_S = 0.050
TARGET_LIVE_S = 1.0
BENCH_UID = 399_999  # below Nakama's sandbox uids (400000-): no other Nakama's rule applies
# The interpreter itself, not a virtualenv's link to it: a jail binds only the installation.
PYTHON = os.path.realpath(sys.executable)
SANDBOX_OFF = {"NAKAMA_RUNTIME__SANDBOX": "off"}
VARIANTS = ("plain", "limits", "sandboxed")


def ms(values: Sequence[float]) -> str:
    return fmt_stats([v * 1000 for v in values], unit="ms", digits=1)


# --- 1. start-up through the Supervisor ------------------------------------------------------
@contextlib.contextmanager
def app_dir() -> Iterator[Path]:
    """The tiny app in a temp dir the sandbox's uid may read, with a data dir it may write."""
    root = Path(tempfile.mkdtemp(prefix="nakama-bench-sandbox-"))
    try:
        root.chmod(0o755)
        (root / "code").mkdir(mode=0o755)
        (root / "code" / "app.py").write_text(TINY_APP)
        (root / "data").mkdir(mode=0o700)
        os.chown(root / "data", BENCH_UID, BENCH_UID)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    return next(p for p in range(_free_port_range(width=1), 32000) if port_is_free(p))


def startup(starts: int, interval: float) -> dict[str, list[float]]:
    settings = RuntimeSettings(health_interval_s=interval, stop_timeout_s=2.0)
    limits = effective_limits(LimitsSettings())
    limiter = detect(f"bench-{os.getpid()}")
    print(f"limiter: {limiter.describe()}; sandbox as root: {os.geteuid() == 0}", flush=True)
    supervisors = {
        "plain": Supervisor(settings=settings, sandbox=Sandbox("off")),
        "limits": Supervisor(settings=settings, sandbox=Sandbox("off"), limiter=limiter),
        "sandboxed": Supervisor(settings=settings, sandbox=Sandbox("bwrap"), limiter=limiter),
    }
    took: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with app_dir() as root:
        code, data = root / "code", root / "data"
        jail = Jail(
            ro=(code, *python_roots(Path(PYTHON))),
            rw=(data,),
            cwd=code,
            uid=BENCH_UID if os.geteuid() == 0 else None,
        )
        port = free_port()

        def spec(variant: str) -> AppSpec:
            return AppSpec(
                name=f"bench-{variant}",
                cwd=code,
                command=[PYTHON, "app.py"],
                port=port,
                env={"DATA_DIR": str(data), "HOME": str(data)},
                log_path=root / f"{variant}.log",
                jail=jail if variant == "sandboxed" else None,
                limits=limits if variant != "plain" else None,
            )

        try:
            for i in range(2 + starts):  # two untimed rounds first
                order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
                order = order if i % 2 else order[::-1]
                for variant in order:
                    sup, s = supervisors[variant], spec(variant)
                    t = time.perf_counter()
                    sup.run(s)
                    elapsed = time.perf_counter() - t
                    sup.stop(s.name)
                    if i >= 2:
                        took[variant].append(elapsed)
        finally:
            for sup in supervisors.values():
                sup.stop_all()
        try:
            breakdown(jail, limiter, limits)
        finally:
            remove_limiter_bases(limiter)
    return took


def remove_limiter_bases(limiter: Limiter) -> None:
    """Remove the (empty) per-instance groups ``detect()`` made; nothing else removes them."""
    for base in getattr(limiter, "_bases", {}).values():
        with contextlib.suppress(OSError):
            base.rmdir()


def timed_runs(argv: list[str], times: int, **kwargs: object) -> list[float]:
    took = []
    for _ in range(times):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=30, **kwargs)  # type: ignore[call-overload]
        took.append(time.perf_counter() - t)
    return took


def breakdown(jail: Jail, limiter: Limiter, limits: object, times: int = 30) -> None:
    """Where a sandboxed start's time goes, piece by piece."""
    sandbox = Sandbox("bwrap")
    full = sandbox.wrap(["/bin/true"], jail)
    cut = full.index("--")
    bwrap_only = [*full[: cut + 1], "/bin/true"]
    inner = full[cut + 1 :]  # setpriv ... -- env --default-signal=TERM /bin/true (as root)
    env_only = ["env", "--default-signal=TERM", "/bin/true"]
    group_name = "bench-breakdown"
    rows: list[tuple[str, list[float]]] = [
        ("/bin/true", timed_runs(["/bin/true"], times)),
        ("env --default-signal=TERM /bin/true", timed_runs(env_only, times)),
    ]
    if inner != env_only:
        rows.append(("setpriv ... env ... /bin/true (no bwrap)", timed_runs(inner, times)))
    rows += [
        ("bwrap (namespaces + mounts) /bin/true", timed_runs(bwrap_only, times)),
        ("bwrap + setpriv + env /bin/true (the wrapper)", timed_runs(full, times)),
        ("/bin/true with a preexec_fn (fork, not vfork)", timed_runs(["/bin/true"], times,
                                                                     preexec_fn=ignore_sigterm)),
    ]  # fmt: skip
    group_times, join = [], []
    for _ in range(times):
        t = time.perf_counter()
        group = limiter.group(group_name, limits)  # type: ignore[arg-type]
        group_times.append(time.perf_counter() - t)
        if group is not None:
            preexec = limiter.preexec(limits, group, ignore_sigterm=True)  # type: ignore[arg-type]
            join += timed_runs(full, 1, preexec_fn=preexec)
            t = time.perf_counter()
            group.remove()
            group_times[-1] += time.perf_counter() - t
    if join:
        rows.append(("the wrapper, joining the app's cgroup first", join))
        rows.append((f"cgroup made (mkdir + limits) and removed ({limiter.kind})", group_times))
    rows += [
        ("python -c pass", timed_runs([PYTHON, "-c", "pass"], times)),
        ("python -c pass in the sandbox",
         timed_runs(sandbox.wrap([PYTHON, "-c", "pass"], jail), times)),
    ]  # fmt: skip
    print(f"\nwhere a sandboxed start's time goes ({times}x each, subprocess.run wall time):")
    for label, values in rows:
        print(f"  {label:<58} median {percentile(values, 50) * 1000:6.2f} ms  "
              f"p90 {percentile(values, 90) * 1000:6.2f} ms")  # fmt: skip


# --- 2. push to live, sandbox on and off -----------------------------------------------------
def push_to_live(rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    lives: dict[str, list[float]] = {"on": [], "off": []}
    jobs: dict[str, list[float]] = {"on": [], "off": []}
    with (
        running_nakama("sandbox-on") as on,
        running_nakama("sandbox-off", extra_env=SANDBOX_OFF) as off,
        httpx.Client(timeout=2) as client,
    ):
        servers = {"on": on, "off": off}
        urls, works = {}, {}
        for key, server in servers.items():
            urls[key] = create_project(server, "bench")["app_url"]
            works[key] = clone(server, "bench", server.tmp / "work")  # type: ignore[attr-defined]
        for i in range(warmup + rounds):
            for key in ("on", "off") if i % 2 else ("off", "on"):
                version = f"{key}{i}"
                set_version(works[key], version)
                r = timed_push(
                    servers[key], "bench", works[key], message=version, app_url=urls[key],
                    expected=version, client=client,
                )  # fmt: skip
                if i >= warmup:
                    lives[key].append(r["live"])
                    jobs[key].append(r["finished"] - r["started"])
            if i >= warmup:
                print(
                    f"push {i - warmup + 1:>3}/{rounds}: sandbox on {lives['on'][-1]:.3f}s  "
                    f"off {lives['off'][-1]:.3f}s",
                    flush=True,
                )
    lives["job_on"], lives["job_off"] = jobs["on"], jobs["off"]
    return lives


# --- 3. memory with N apps -------------------------------------------------------------------
def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_kib(pid: int) -> tuple[str, int, int]:
    """(command name, VmRSS, Pss) of ``pid``, in KiB; zeros once it is gone."""
    with contextlib.suppress(OSError):
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        rss = pss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
        return comm, rss, pss
    return "", 0, 0


@dataclass(frozen=True)
class Snapshot:
    """The server's own memory and its descendants' by command name, in KiB."""

    rss: int
    pss: int
    kinds: dict[str, tuple[int, int, int]]  # command name -> (processes, VmRSS, PSS)

    def total(self) -> tuple[int, int, int]:
        rows = self.kinds.values()
        return tuple(sum(row[i] for row in rows) for i in range(3))  # type: ignore[return-value]


def snapshot(pid: int) -> Snapshot:
    _, rss, pss = memory_kib(pid)
    kinds: dict[str, tuple[int, int, int]] = {}
    for child in descendants(pid):
        comm, c_rss, c_pss = memory_kib(child)
        if comm:
            count, r, p = kinds.get(comm, (0, 0, 0))
            kinds[comm] = (count + 1, r + c_rss, p + c_pss)
    return Snapshot(rss, pss, kinds)


def memory(apps: int) -> tuple[Snapshot, Snapshot]:
    first = _free_port_range(width=apps * 2 + 10)
    ports = {
        "NAKAMA_RUNTIME__PORT_RANGE_START": str(first),
        "NAKAMA_RUNTIME__PORT_RANGE_END": str(first + apps * 2 + 9),
    }
    with running_nakama("sandbox-rss", extra_env=ports) as server:
        assert server.proc is not None
        pid = server.proc.pid
        time.sleep(1.0)
        empty = snapshot(pid)
        t = time.monotonic()
        names = [f"app{i:02d}" for i in range(1, apps + 1)]
        for name in names:
            r = server.api.post("/api/v1/projects", json={"name": name})
            if r.status_code != 201:
                raise RuntimeError(f"create {name}: HTTP {r.status_code} {r.text}")
        for name in names:
            commit = server.pipelines(name)[0]["commit"]
            server.wait_deployed(name, commit, timeout=300)
        print(f"{apps} apps created and running in {time.monotonic() - t:.1f}s", flush=True)
        time.sleep(2.0)  # the last starts' pipelines and log pumps settle
        wait_for(
            lambda: all(server.project(n)["app_state"] == "running" for n in names),
            timeout=30,
            what="every app running",
        )
        full = snapshot(pid)
    return empty, full


def print_memory(label: str, snap: Snapshot) -> None:
    count, rss, pss = snap.total()
    print(
        f"  {label}: server VmRSS {snap.rss / 1024:.1f} MiB (PSS {snap.pss / 1024:.1f}); "
        f"descendants: {count} processes, VmRSS {rss / 1024:.1f} MiB (PSS {pss / 1024:.1f})"
    )
    for comm, (n, rss, pss) in sorted(snap.kinds.items()):
        print(
            f"      {comm:<16} x{n:<3} VmRSS {rss / 1024:7.1f} MiB ({rss / n / 1024:5.1f} "
            f"each)  PSS {pss / 1024:6.1f} MiB ({pss / n / 1024:5.1f} each)"
        )


# --- main ------------------------------------------------------------------------------------
def step(what: str) -> None:
    print(f"\n--- {what}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="timed pushes per variant")
    ap.add_argument("--starts", type=int, default=40, help="timed app starts per variant")
    ap.add_argument("--apps", type=int, default=20, help="apps running for the memory figure")
    ap.add_argument("--interval", type=float, default=0.005, help="health probe interval, s")
    args = ap.parse_args()
    rounds, starts = max(1, min(args.rounds, 200)), max(1, min(args.starts, 1000))
    apps, interval = max(1, min(args.apps, 100)), max(0.001, min(args.interval, 0.5))
    print(machine_note(), flush=True)

    step(f"start-up through the Supervisor, {starts} starts per variant, interleaved")
    took = startup(starts, interval)
    step(f"push to live, sandbox on and off, {rounds} pushes each, interleaved")
    lives = push_to_live(rounds)
    step(f"memory, nakama up with the sandbox, 0 and {apps} apps")
    empty, full = memory(apps)

    print("\n=== sandbox: bubblewrap + cgroup per app against no sandbox ===")
    print(machine_note())
    print(f"start-up, run() until it returns (answered HTTP), {starts}x each, "
          f"health probe every {interval * 1000:g} ms:")  # fmt: skip
    for variant in VARIANTS:
        print(f"  {variant:<10} {ms(took[variant])}")
    med = {v: percentile(took[v], 50) for v in VARIANTS}
    p90 = {v: percentile(took[v], 90) for v in VARIANTS}
    added, added_p90 = med["sandboxed"] - med["plain"], p90["sandboxed"] - p90["plain"]
    verdict = "MET" if added <= TARGET_ADDED_S else "MISSED"
    print(f"  added by the sandbox (sandboxed - plain): median {added * 1000:+.1f} ms, p90 "
          f"{added_p90 * 1000:+.1f} ms; of it the cgroup alone (limits - plain): median "
          f"{(med['limits'] - med['plain']) * 1000:+.1f} ms")  # fmt: skip
    print(f"  target: added median <= {TARGET_ADDED_S * 1000:.0f} ms -> {verdict}")
    print(f"push to live, code-only push of the tiny app through the gateway, {rounds}x each:")
    print(f"  sandbox on   {fmt_stats(lives['on'])}")
    print(f"  sandbox off  {fmt_stats(lives['off'])}")
    print(f"  reload job   on: median {percentile(lives['job_on'], 50):.3f}s  "
          f"off: median {percentile(lives['job_off'], 50):.3f}s")  # fmt: skip
    live_on, live_off = percentile(lives["on"], 50), percentile(lives["off"], 50)
    print(f"  target: sandbox on median <= {TARGET_LIVE_S:.1f} s -> "
          f"{'MET' if live_on <= TARGET_LIVE_S else 'MISSED'}")  # fmt: skip
    print("memory of nakama up (sandbox on), VmRSS and PSS from /proc:")
    print_memory("0 apps", empty)
    print_memory(f"{apps} apps", full)
    _, rss_0, pss_0 = empty.total()
    _, rss_n, pss_n = full.total()
    print(
        f"  per app (all its processes): VmRSS {(rss_n - rss_0) / apps / 1024:.1f} MiB, PSS "
        f"{(pss_n - pss_0) / apps / 1024:.1f} MiB; the server grew by "
        f"{(full.rss - empty.rss) / 1024:.1f} MiB"
    )
    print(
        f"RESULT sandbox startup_added_median={added * 1000:.1f}ms "
        f"startup_added_p90={added_p90 * 1000:.1f}ms "
        f"startup_sandboxed_median={med['sandboxed'] * 1000:.1f}ms "
        f"startup_plain_median={med['plain'] * 1000:.1f}ms "
        f"push_to_live_on={live_on:.3f}s push_to_live_off={live_off:.3f}s "
        f"server_rss_0={empty.rss / 1024:.1f}MiB server_rss_{apps}={full.rss / 1024:.1f}MiB "
        f"apps_rss_{apps}={rss_n / 1024:.1f}MiB apps_pss_{apps}={pss_n / 1024:.1f}MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
