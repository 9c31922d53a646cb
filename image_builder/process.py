"""Running one build step (uv or buildah): its output copied into the build log line by line as
it comes (a line of at most 64 KiB at a time), credentials masked, and the step with everything
it started killed at a deadline."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nakama.clients.git import mask_credentials

_LINE_BYTES = 64 * 1024
_TAIL_LINE_CHARS = 1000  # of a line kept for an error message


@dataclass(frozen=True)
class StepResult:
    returncode: int
    timed_out: bool
    tail: tuple[str, ...]  # the last lines of output, for error messages


def run_step(
    args: Sequence[str],
    *,
    out: TextIO,
    deadline: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    tail_lines: int = 20,
    preexec: Callable[[], None] | None = None,
) -> StepResult:
    """Run ``args`` until it ends or ``deadline`` (a ``time.monotonic()`` value) passes;
    ``preexec`` runs in the child before it executes (a sandbox's control group and limits)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return StepResult(returncode=-1, timed_out=True, tail=())
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a timeout kills what the step started, too
        preexec_fn=preexec,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(remaining, kill)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        # A line is read _LINE_BYTES at most at a time: output without newlines (a hostile
        # build printing gigabytes) costs no more memory than a line.
        while raw := proc.stdout.readline(_LINE_BYTES):
            line = mask_credentials(raw.decode(errors="replace").rstrip("\r\n"))
            tail.append(line[:_TAIL_LINE_CHARS])
            out.write(line + "\n")
            out.flush()
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return StepResult(returncode=returncode, timed_out=timed_out.is_set(), tail=tuple(tail))
