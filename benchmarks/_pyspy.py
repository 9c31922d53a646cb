"""Profile a running process with py-spy (``pip install py-spy``) and summarise the samples."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

# Leaf functions that are a thread blocked in a wait: py-spy does not always see them as idle.
WAITS = (
    "Condition.wait",
    "Event.wait",
    "Popen._try_wait",
    "Popen.wait",
    "Thread.join",
    "_wait_for_tstate_lock",
    "select",
    "poll",
    "sleep",
    "EpollSelector.select",
)


OURS = ("nakama/", "webhook_receiver/", "backend/", "image_builder/", "code_reloader/")


def _role(frames: list[str]) -> str:
    """Which thread a stack belongs to: the target of Thread.run, or the main (event loop)."""
    for i, frame in enumerate(frames):
        if frame.startswith("Thread.run ") and i + 1 < len(frames):
            return "thread " + frames[i + 1]
    return "main thread: uvicorn event loop (HTTP intake)"


def _innermost_ours(frames: list[str]) -> str:
    """The innermost project frame; with its caller when it is a shared helper (the database
    session), so the time of commits is charged to whoever committed."""
    ours = [f for f in frames if f.split(" (")[-1].startswith(OURS)]
    if not ours:
        return "(no project frame)"
    if ours[-1].split(" (")[-1].startswith("nakama/db/") and len(ours) > 1:
        return f"{ours[-2].split(' (')[0]} > {ours[-1]}"
    if ours[-1].startswith("up (nakama_cli/main.py)"):
        return "uvicorn/FastAPI itself, outside any handler (under nakama_cli.main.up)"
    return ours[-1]


def profile_summary(raw: Path, root: Path, top: int = 15) -> list[str]:
    """Busy samples per thread, top functions by own (leaf) samples and by innermost project
    frame, from py-spy's raw (collapsed-stack) output; stacks ending in a wait are left out."""
    if not raw.exists():
        return ["py-spy wrote no profile"]
    own: collections.Counter[str] = collections.Counter()
    mine: collections.Counter[str] = collections.Counter()
    roles: collections.Counter[str] = collections.Counter()
    busy = waiting = 0
    for text in raw.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.replace(str(root) + "/", "") for f in stack.split(";")]
        n = int(count)
        if frames[-1].split(" (")[0] in WAITS:
            waiting += n
            continue
        busy += n
        own[frames[-1]] += n
        roles[_role(frames)] += n
        mine[_innermost_ours(frames)] += n
    if not busy:
        return ["py-spy recorded no busy samples"]
    pct = lambda n: f"{100 * n / busy:5.1f}%"  # noqa: E731
    out = [
        f"{busy} busy samples at 100 Hz over all threads ({waiting} blocked-wait samples "
        "left out); percentages are of busy samples",
        "by thread:",
    ]
    out += [f"  {pct(n)}  {r[:120]}" for r, n in roles.most_common(6)]
    out.append("by own time (leaf function):")
    out += [f"  {pct(n)}  {f[:120]}" for f, n in own.most_common(top)]
    out.append("by the innermost project frame (time spent in it and in what it calls):")
    out += [f"  {pct(n)}  {f[:120]}" for f, n in mine.most_common(top)]
    return out


@contextlib.contextmanager
def py_spy_record(
    pid: int, out: Path, *, duration: int, rate: int = 100, gil: bool = False
) -> Iterator[None]:
    """``py-spy record`` of ``pid`` for ``duration`` s (raw collapsed stacks, no line numbers)
    around the body; waits for py-spy to write ``out``. ``gil``: only the thread holding the
    GIL is sampled (where Python work serializes; threads blocked in a read are left out even
    when py-spy cannot tell they wait)."""
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "-d",
            str(duration),
            "-r",
            str(rate),
            "-f",
            "raw",
            "--nolineno",
            "-o",
            str(out),
            "--pid",
            str(pid),
            *(["--gil"] if gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        yield
        spy.wait(timeout=duration + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(timeout=10)
