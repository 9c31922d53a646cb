"""The bounded app log: rotation, reopening, tails across both files, concurrent writers."""

from __future__ import annotations

import random
import re
import threading
from pathlib import Path

import pytest

from backend.local.applog import RotatingLog, read_tail, remove_logs, rotated_path


def kept(path: Path) -> bytes:
    """Everything the log holds, older file first."""
    older = rotated_path(path)
    return (older.read_bytes() if older.exists() else b"") + path.read_bytes()


@pytest.mark.parametrize("chunk", [1, 7, 99, 499, 500, 501, 999, 1000, 1001, 4321])
def test_rotation_keeps_the_newest_output_within_max_bytes(tmp_path: Path, chunk: int) -> None:
    path, max_bytes = tmp_path / "app.log", 1000
    stream = random.Random(chunk).randbytes(6000)
    with RotatingLog(path, max_bytes=max_bytes) as log:
        for start in range(0, len(stream), chunk):
            log.write(stream[start : start + chunk])
            assert path.stat().st_size <= max_bytes // 2
    assert rotated_path(path).stat().st_size <= max_bytes // 2
    output = kept(path)
    assert stream.endswith(output)
    assert len(output) >= max_bytes // 2  # rotation keeps at least the newer half


def test_nothing_rotates_below_half(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=1000) as log:
        log.write(b"x" * 500)
    assert path.read_bytes() == b"x" * 500
    assert not rotated_path(path).exists()


def test_a_line_longer_than_the_whole_log(tmp_path: Path) -> None:
    path, max_bytes = tmp_path / "app.log", 1000
    with RotatingLog(path, max_bytes=max_bytes) as log:
        log.write_line("--- started pid 1 at T ---")
        for _ in range(50):  # as the pump would: 50 pieces of one 5000-byte line
            log.write(b"L" * 100)
        log.write(b"\nafter\n")
    assert len(kept(path)) <= max_bytes
    tail = read_tail(path, lines=2)
    assert re.fullmatch(r"L{400,}\nafter", tail), tail[-50:]
    assert read_tail(path, lines=2, max_bytes=100) == "L" * 93 + "\nafter"


def test_one_write_longer_than_the_whole_log_keeps_its_end(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    data = random.Random(1).randbytes(3017)
    with RotatingLog(path, max_bytes=1000) as log:
        log.write(b"older\n")
        log.write(data)
    assert kept(path) == data[-1000:]
    assert path.stat().st_size == rotated_path(path).stat().st_size == 500


def test_tail_across_the_rotation_boundary(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    written = [f"line {i:03d}" for i in range(40)]
    with RotatingLog(path, max_bytes=200) as log:
        for line in written:
            log.write_line(line)
    newer = path.read_text().splitlines()
    assert rotated_path(path).exists() and 0 < len(newer) < 10
    lines = len(newer) + 3
    assert read_tail(path, lines=lines) == "\n".join(written[-lines:])
    assert read_tail(path, lines=lines, terminated=True) == "\n".join(written[-lines:]) + "\n"


def test_tail_joins_a_line_split_between_the_two_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=200) as log:
        log.write(b"head\n")
        log.write(b"A" * 150 + b"\nnext\n")  # longer than half: split at 100 bytes
    assert rotated_path(path).read_bytes() == b"A" * 100
    assert read_tail(path, lines=2) == "A" * 150 + "\nnext"


def test_tail_never_reads_more_than_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=1 << 20) as log:
        for i in range(20_000):
            log.write_line(f"{i:09d}")  # 10 bytes a line
    assert read_tail(path, lines=1000, max_bytes=95) == "9990\n" + "\n".join(
        f"{i:09d}" for i in range(19_991, 20_000)
    )


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"", 1, ""),
        (b"a", 1, "a"),
        (b"a\n", 1, "a"),
        (b"one\ntwo", 1, "two"),
        (b"a\nb\nc\n", 2, "b\nc"),
        (b"a\r\nb", 5, "a\nb"),
        (b"\xff\n", 1, "\ufffd"),
        (b"\n\n", 5, "\n"),
        (b"a\nb\n\n", 2, "b\n"),
    ],
)
def test_tail_format_matches_the_supervisor(
    tmp_path: Path, content: bytes, lines: int, expected: str
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(content)
    assert read_tail(path, lines=lines) == expected
    assert read_tail(path, lines=lines, terminated=True) == (expected + "\n" if content else "")


def test_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "app.log", lines=10) == ""
    assert read_tail(tmp_path / "app.log", lines=10, terminated=True) == ""


def test_tail_of_no_lines_is_empty(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("a\nb\n")
    assert read_tail(tmp_path / "app.log", lines=0) == ""


def test_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=1000) as log:
        log.write(b"first run\n")
    with RotatingLog(path, max_bytes=1000) as log:
        log.write_line("--- started pid 2 at T ---")
        log.write(b"second run\n")
    assert path.read_text() == "first run\n--- started pid 2 at T ---\nsecond run\n"


def test_reopening_counts_the_existing_size_towards_rotation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=200) as log:
        log.write(b"a" * 90)
    with RotatingLog(path, max_bytes=200) as log:
        log.write(b"b" * 20)
    assert rotated_path(path).read_bytes() == b"a" * 90
    assert path.read_bytes() == b"b" * 20


def test_a_marker_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"Loading...")  # a crashed app's last words, without a newline
    with RotatingLog(path, max_bytes=1000) as log:
        log.write_line("--- started pid 3 at T ---\n")
        log.write_line("--- again ---")
    assert path.read_text() == "Loading...\n--- started pid 3 at T ---\n--- again ---\n"


def test_an_oversized_older_log_is_cut_to_its_newest_half(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    legacy = random.Random(2).randbytes(10_000)
    path.write_bytes(legacy)
    with RotatingLog(path, max_bytes=1000) as log:
        log.write(b"new\n")
    assert rotated_path(path).read_bytes() == legacy[-500:]
    assert path.read_bytes() == b"new\n"


def test_concurrent_writers_never_interleave_within_a_write(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    log = RotatingLog(path, max_bytes=64 * 1024)

    def chunks(worker: int) -> None:  # five lines per write, as a pump read might carry
        for n in range(300):
            log.write(b"".join(b"w%d %04d %d %s\n" % (worker, n, i, b"." * 60) for i in range(5)))

    def markers(worker: int) -> None:
        for n in range(300):
            log.write_line(f"--- marker {worker} {n:04d} ---")

    threads = [threading.Thread(target=chunks, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=markers, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    lines = kept(path).decode().splitlines()
    assert len(lines) > 500 and rotated_path(path).exists()
    expected_next: dict[str, int] = {}
    for line in lines:
        if line.startswith("---"):
            assert re.fullmatch(r"--- marker \d \d{4} ---", line), line
            continue
        match = re.fullmatch(r"(w\d \d{4}) (\d) \.{60}", line)
        assert match, line
        chunk, index = match[1], int(match[2])
        assert index == expected_next.pop(chunk, 0), line
        if index < 4:
            expected_next[chunk] = index + 1
    assert not expected_next  # the kept output starts where a write started


def test_a_tail_read_during_rotations_is_one_consistent_run(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    tails = []
    with RotatingLog(path, max_bytes=2000) as log:  # a rotation every 50 lines

        def write() -> None:
            for i in range(10_000):
                log.write_line(f"{i:019d}")

        writer = threading.Thread(target=write)
        writer.start()
        while writer.is_alive() or len(tails) < 10:
            tails.append([int(line) for line in read_tail(path, lines=40).splitlines()])
        writer.join()
    runs = [numbers for numbers in tails if numbers]
    assert len(runs) >= 10
    for numbers in runs:
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    log = RotatingLog(path, max_bytes=1000)
    log.write(b"kept\n")
    log.close()
    log.write(b"lost\n")
    log.write_line("lost")
    log.close()
    assert path.read_bytes() == b"kept\n"


def test_remove_logs_deletes_both_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    with RotatingLog(path, max_bytes=100) as log:
        for _ in range(5):
            log.write(b"x" * 40)
    assert path.exists() and rotated_path(path).exists()
    remove_logs(path)
    assert list(tmp_path.iterdir()) == []
    remove_logs(path)  # missing files are fine


def test_max_bytes_must_leave_room_for_two_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        RotatingLog(tmp_path / "app.log", max_bytes=1)
