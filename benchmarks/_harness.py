"""Shared pieces of the benchmarks: a throw-away ``nakama up``, the tiny app kit, statistics.

Every benchmark runs ``nakama up`` on 127.0.0.1 with a fresh temporary data dir, a free port,
``NAKAMA_ADMIN_TOKEN`` set and ``NAKAMA_STARTER_KIT_DIR`` pointing at a tiny stdlib app (or, with
``real_kit=True``, the repository's real Streamlit ``app_starter_kit/``), and on exit stops it with
SIGTERM, kills (by pid) any process still running from the temp dir and deletes it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from backend.local.supervisor import port_is_free  # noqa: E402
from tests.e2e.nakama_server import (  # noqa: E402  (needs REPO_ROOT on sys.path)
    NakamaProcess,
    fetch_text,
    gateway_target,
    git,
    wait_for,
    write_tiny_kit,
)

# The benchmarks' own git commands must not depend on the user's git config.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _pids_under(root: Path) -> list[int]:
    """Our leftover processes: those whose cwd, executable or command line is inside ``root``."""
    me, found, needle = os.getpid(), [], str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmd or cwd.startswith(needle):
            found.append(int(entry.name))
    return found


def _kill_leftovers(root: Path) -> int:
    pids = _pids_under(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _free_port_range(width: int = 10) -> int:
    """A start port P such that P..P+width-1 are free now (apps get ports from this range, so
    the benchmark does not collide with other Nakamas using the default 8600-8999)."""
    # Below the kernel's ephemeral range (32768-60999): after a load test it is full of
    # TIME_WAIT sockets of the client's connections.
    for _ in range(50):
        start = random.randrange(20000, 32000 - width)
        if all(port_is_free(p) for p in range(start, start + width)):
            return start
    raise RuntimeError("no free port range for apps")


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running_nakama(
    name: str,
    *,
    requirements: str = "# no dependencies\n",
    uv_cache: bool = False,
    keep: bool = False,
    extra_env: dict[str, str] | None = None,
    real_kit: bool = False,
) -> Iterator[NakamaProcess]:
    """A started ``nakama up`` in a fresh temp dir; everything is stopped and deleted after.

    ``real_kit``: new projects start from the real ``app_starter_kit/`` (Streamlit) instead of
    the tiny kit; ``NAKAMA_STARTER_KIT_DIR`` is not passed on, even if it is set here.
    """
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    os.environ.update(GIT_ENV)
    tmp = Path(tempfile.mkdtemp(prefix=f"nakama-bench-{name}-"))
    kit = None if real_kit else write_tiny_kit(tmp / "kit", requirements=requirements)
    first = _free_port_range()
    extra_env = {
        "NAKAMA_RUNTIME__PORT_RANGE_START": str(first),
        "NAKAMA_RUNTIME__PORT_RANGE_END": str(first + 9),
        **(extra_env or {}),
    }
    server = NakamaProcess(
        data_dir=tmp / "data",
        starter_kit=kit,
        uv_cache=(tmp / "uv-cache") if uv_cache else None,
        extra_env=extra_env,
    )
    if real_kit:
        server.env.pop("NAKAMA_STARTER_KIT_DIR", None)
    server.tmp = tmp  # type: ignore[attr-defined]
    try:
        server.start()
        yield server
    finally:
        try:
            server.close()  # SIGTERM, then wait for a graceful stop
        except Exception as exc:
            print(f"[cleanup] nakama did not stop cleanly: {exc}", file=sys.stderr)
            if server.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGKILL)
        killed = _kill_leftovers(tmp)
        if killed:
            print(f"[cleanup] killed {killed} leftover process(es)", file=sys.stderr)
        if keep:
            print(f"[cleanup] kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def create_project(server: NakamaProcess, name: str, *, timeout: float = 180) -> dict:
    r = server.api.post("/api/v1/projects", json={"name": name})
    if r.status_code != 201:
        raise RuntimeError(f"create {name}: HTTP {r.status_code} {r.text}")
    first = server.pipelines(name)[0]
    return server.wait_deployed(name, first["commit"], timeout=timeout)


def pipeline_for(server: NakamaProcess, name: str, commit: str, *, timeout: float = 30) -> dict:
    """The finished pipeline of ``commit`` (polls until it has a finished_at)."""

    def check() -> dict | None:
        for p in server.pipelines(name):
            if p["commit"] == commit and p["finished_at"]:
                return p
        return None

    return dict(wait_for(check, timeout=timeout, interval=0.05, what=f"pipeline of {commit[:8]}"))


def query(server: NakamaProcess, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    """Read Nakama's SQLite database (``<data>/nakama.db``) read-only."""
    uri = f"file:{server.data_dir / 'nakama.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
        return conn.execute(sql, tuple(params)).fetchall()


def parse_ts(value: str) -> float:
    """An API timestamp as epoch seconds (naive ones are UTC, as SQLite drops the zone)."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def fmt_stats(values: Sequence[float], unit: str = "s", digits: int = 3) -> str:
    s = stats(values)
    return "  ".join(f"{k}={v:.{digits}f}{unit}" for k, v in s.items())


# --- one timed push, shared by push_to_live and dependency_change ---------------------------
PHASES = ("hook", "planned", "started", "finished", "push", "live")
PHASE_PREV = {
    "hook": None,
    "planned": "hook",
    "started": "planned",
    "finished": "started",
    "push": None,
    "live": "finished",
}
PHASE_LABELS = {
    "hook": "webhook event stored (git transfer + post-receive hook)",
    "planned": "pipeline created (event processing + planning)",
    "started": "pipeline started by a job runner (queue wait)",
    "finished": "pipeline finished (env lookup/build + checkout + restart + health)",
    "push": "`git push` returned to the user",
    "live": "new version first seen on the app URL",
}


def poll_until(
    client: httpx.Client, url: str, expected: str, *, deadline: float, interval: float = 0.010
) -> float | None:
    """Wall-clock time at which ``url`` first answered exactly ``expected``; None on timeout."""
    target, headers = gateway_target(url)
    while time.monotonic() < deadline:
        try:
            r = client.get(target, headers=headers)
            if r.status_code == 200 and r.text == expected:
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    return None


def push_commit(work: Path, message: str) -> tuple[str, float, float]:
    """Commit what is in ``work`` and ``git push`` it: (commit, push started, push returned),
    the times as wall-clock epoch seconds."""
    git("commit", "-qam", message, cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    t0 = time.time()
    out = subprocess.run(
        ["git", "push", "-q", "origin", "HEAD:main"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    t_push = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"git push failed: {out.stderr}")
    return sha, t0, t_push


def milestones(server: NakamaProcess, project: str, sha: str, t0: float) -> dict:
    """Nakama's own timestamps for the push of ``sha``, in seconds after ``t0``:
    ``hook`` (``webhook_events.received_at``), ``planned``/``started``/``finished``
    (``pipelines.created_at/started_at/finished_at``), plus the pipeline's kind/status/reason."""
    p = pipeline_for(server, project, sha)
    hook = query(
        server,
        "SELECT MIN(received_at) FROM webhook_events WHERE project = ? AND body LIKE ?",
        (project, f"%{sha}%"),
    )[0][0]
    return {
        "kind": p["kind"],
        "status": p["status"],
        "reason": p["reason"],
        "hook": parse_ts(hook) - t0 if hook else float("nan"),
        "planned": parse_ts(p["created_at"]) - t0,
        "started": parse_ts(p["started_at"]) - t0,
        "finished": parse_ts(p["finished_at"]) - t0,
    }


def timed_push(
    server: NakamaProcess,
    project: str,
    work: Path,
    *,
    message: str,
    app_url: str,
    expected: str,
    client: httpx.Client,
    live_timeout: float = 60.0,
) -> dict:
    """Commit what is in ``work``, push it and time each milestone since ``git push`` started.

    ``hook``/``planned``/``started``/``finished`` come from Nakama's own timestamps
    (``webhook_events.received_at``, ``pipelines.created_at/started_at/finished_at``), ``push``
    is when ``git push`` returned and ``live`` when the app URL first answered ``expected``.
    """
    sha, t0, t_push = push_commit(work, message)
    t_live = poll_until(client, app_url, expected, deadline=time.monotonic() + live_timeout)
    if t_live is None:
        raise RuntimeError(
            f"{expected!r} not served after {live_timeout}s; app says "
            f"{fetch_text(app_url)!r}; pipelines: {server.pipelines(project)[:2]}"
        )
    return {**milestones(server, project, sha, t0), "push": t_push - t0, "live": t_live - t0}


def print_breakdown(results: Sequence[dict], *, live_label: str | None = None) -> None:
    print("breakdown (medians over runs; 'at' = seconds after `git push` started,")
    print("           'step' = time from the previous milestone in the chain):")
    labels = {**PHASE_LABELS, **({"live": live_label} if live_label else {})}
    for phase in PHASES:
        at = percentile([r[phase] for r in results], 50)
        prev = PHASE_PREV[phase]
        step = at if prev is None else percentile([r[phase] - r[prev] for r in results], 50)
        print(f"  {phase:<9} at {at:7.3f}s  step {step:+7.3f}s  {labels[phase]}")


_LOAD_AT_START = os.getloadavg()


def machine_note() -> str:
    """CPU count and the load average before the benchmark began: other work skews the figures."""
    one, five, fifteen = _LOAD_AT_START
    load = f"{one:.2f} {five:.2f} {fifteen:.2f}"
    return f"machine: {os.cpu_count()} CPUs; load average before start {load}"
