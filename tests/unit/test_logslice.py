"""What piece of a log a bounded read returns (nakama.logslice)."""

from __future__ import annotations

import pytest

from nakama.errors import InvalidInput
from nakama.logslice import PieceCollector, check_read_bytes, complete_utf8, cut_note, window
from nakama.ports import LogPiece


@pytest.mark.parametrize(
    ("size", "offset", "max_bytes", "expected"),
    [
        (0, None, 10, (0, 0)),
        (5, None, 10, (0, 5)),  # a short log: all of it
        (100, None, 10, (90, 100)),  # the tail
        (100, 0, 10, (0, 10)),  # the first page
        (100, 95, 10, (95, 100)),
        (100, 150, 10, (100, 100)),  # past the end: nothing
    ],
)
def test_the_window_read(
    size: int, offset: int | None, max_bytes: int, expected: tuple[int, int]
) -> None:
    assert window(size, offset=offset, max_bytes=max_bytes) == expected


@pytest.mark.parametrize("offset", [None, 0, 3, 7, 30])
def test_a_collector_keeps_what_a_file_read_would(offset: int | None) -> None:
    log = bytes(range(65, 65 + 26))  # A..Z
    collector = PieceCollector(offset=offset, max_bytes=5)
    for i in range(0, len(log), 4):
        collector.feed(log[i : i + 4])
    start, end = window(len(log), offset=offset, max_bytes=5)
    assert collector.piece() == LogPiece(data=log[start:end], start=start, size=len(log))
    collector.reset()
    assert collector.piece().size == 0


def test_a_tail_collector_holds_little_of_a_long_log() -> None:
    collector = PieceCollector(offset=None, max_bytes=10)
    for _ in range(10_000):
        collector.feed(b"x" * 100)
        assert len(collector._buf) <= 2 * 10 + 100
    assert collector.piece().start == 1_000_000 - 10


def test_reads_over_the_bound_are_refused_naming_the_setting() -> None:
    check_read_bytes(100, bound=100)
    for bad in (0, 101):
        with pytest.raises(InvalidInput, match="NAKAMA_LOGS__PIPELINE_LOG_READ_BYTES"):
            check_read_bytes(bad, bound=100)


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"", 0),
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"a" + "€".encode()[:2], 1),
        (b"a" + "😀".encode()[:3], 1),
        (b"a" + "😀".encode(), 5),
        (b"\x80\x80", 2),  # not UTF-8 at all: sent as it is (decoded with replacement)
    ],
)
def test_a_character_cut_at_the_end_waits(data: bytes, complete: int) -> None:
    assert complete_utf8(data) == complete


def test_a_cut_tail_says_so() -> None:
    assert cut_note(LogPiece(data=b"abc", start=0, size=3)) == ""
    note = cut_note(LogPiece(data=b"abc", start=97, size=100))
    assert "first 97 bytes" in note and "offset=0" in note and note.endswith("\n")
