"""The app-log pump against real pipes and real writer processes, and a real write failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.local.applog import RotatingLog, pump, read_tail, rotated_path, start_pump
from tests.conftest import REPO_ROOT

LINES = 500_000  # of 101 bytes: a 50 MB burst
PAD = b"x" * 90
BURST = rb"""
import sys
out, pad, n = sys.stdout.buffer, b"x" * 90, int(sys.argv[1])
for start in range(0, n, 1000):
    out.write(b"".join(b"%09d %s\n" % (i, pad) for i in range(start, min(n, start + 1000))))
"""
ONE_LINE = rb"""
import sys
out = sys.stdout.buffer
for _ in range(int(sys.argv[1])):
    out.write(b"y" * (1 << 20))
out.write(b"\nlast line\n")
"""


def burst_line(i: int) -> bytes:
    return b"%09d %s\n" % (i, PAD)


def kept(path: Path) -> bytes:
    older = rotated_path(path)
    return (older.read_bytes() if older.exists() else b"") + path.read_bytes()


def peak_memory(work: Callable[[], None]) -> int:
    """The most memory Python allocated, in every thread, while ``work`` ran."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_50_mb_burst_keeps_memory_and_disk_bounded(tmp_path: Path) -> None:
    path, max_bytes = tmp_path / "app.log", 1 << 20
    log = RotatingLog(path, max_bytes=max_bytes)
    read_end, write_end = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", BURST, str(LINES)], stdout=write_end)
    os.close(write_end)
    peak = peak_memory(lambda: pump(read_end, log))
    assert writer.wait(timeout=30) == 0
    log.close()
    assert peak < 2 << 20, f"pumping 50 MB peaked at {peak} bytes"
    with pytest.raises(OSError):
        os.fstat(read_end)  # the pump closed its pipe
    output = kept(path)
    assert max_bytes // 2 <= len(output) <= max_bytes
    newest = b"".join(burst_line(i) for i in range(LINES - len(output) // 101 - 2, LINES))
    assert newest.endswith(output)
    expected = [burst_line(i).decode().rstrip("\n") for i in range(LINES - 100, LINES)]
    assert read_tail(path, lines=100) == "\n".join(expected)


def test_one_line_far_longer_than_the_log_through_a_pipe(tmp_path: Path) -> None:
    path, max_bytes, megabytes = tmp_path / "app.log", 1 << 20, 32
    log = RotatingLog(path, max_bytes=max_bytes)
    writer = subprocess.Popen(
        [sys.executable, "-c", ONE_LINE, str(megabytes)], stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    peak = peak_memory(lambda: start_pump(writer.stdout, log, "huge").join(timeout=30))
    assert writer.wait(timeout=30) == 0
    assert writer.stdout.closed
    log.close()
    assert peak < 2 << 20, f"pumping one {megabytes} MB line peaked at {peak} bytes"
    assert len(kept(path)) <= max_bytes
    tail = read_tail(path, lines=5, max_bytes=4096)
    assert tail == "y" * (4096 - len("\nlast line\n")) + "\nlast line"


def test_markers_and_pumped_output_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    log = RotatingLog(path, max_bytes=64 << 20)  # keeps all of it
    writer = subprocess.Popen(
        [sys.executable, "-c", BURST, "50000"], stdout=subprocess.PIPE
    )  # 5 MB
    assert writer.stdout is not None
    thread = start_pump(writer.stdout, log, "mixed")
    markers = 0
    while thread.is_alive() or markers < 10:
        log.write_line(f"--- marker {markers} ---")
        markers += 1
    thread.join()
    assert writer.wait(timeout=30) == 0
    log.close()
    pumped, seen = [], []
    for line in path.read_text().splitlines():
        if line.startswith("---"):
            seen.append(line)
        else:
            pumped.append(line)
    assert seen == [f"--- marker {n} ---" for n in range(markers)]
    # A marker that came mid-line starts a line of its own; the app's bytes are all there.
    stream = b"".join(burst_line(i).rstrip(b"\n") for i in range(50_000))
    assert "".join(pumped).encode() == stream


FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
from backend.local.applog import RotatingLog

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
log = RotatingLog(Path(sys.argv[1]), max_bytes=1 << 20)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
log.write(b"a" * 60 + b"\n")
log.write(b"b" * 60 + b"\n")
log.write(b"c" * 10 + b"\n")
log.write_line("--- a marker that does not fit ---")
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.write(b"after\n")
log.write(b"more\n")
log.close()
"""


def test_a_failing_write_is_counted_and_reported_once_writing_works(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    match = re.fullmatch(
        rb"a{60}\n(b*)\n?--- (\d+) bytes of output dropped: File too large ---\nafter\nmore\n",
        path.read_bytes(),
    )
    assert match, path.read_bytes()
    written_b = len(match[1])
    marker = len(b"--- a marker that does not fit ---\n") + (1 if written_b else 0)  # "\n" first
    assert int(match[2]) == (61 - written_b) + 11 + marker
