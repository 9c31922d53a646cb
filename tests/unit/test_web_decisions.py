"""The web UI's pure decisions: what a log stream sends, where a sign-in may lead, how long
ago and how long things were (sign-in back-off: tests/unit/test_backoff.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.web.signin import safe_next
from backend.web.streams import next_step
from backend.web.views import ago, duration, elapsed, short_sha
from nakama.ports import LogPiece


@pytest.mark.parametrize(
    ("offset", "seen", "piece", "event", "data", "after"),
    [
        (0, b"", LogPiece(b"", 0, 0), "", b"", 0),  # nothing yet
        (3, b"abc", LogPiece(b"abc", 0, 3), "", b"", 3),  # nothing new
        (3, b"abc", LogPiece(b"abcdef", 0, 6), "log", b"def", 6),
        (0, b"", LogPiece(b"line\n", 0, 5), "log", b"line\n", 5),
        (3, b"abc", LogPiece(b"xyzdef", 0, 6), "reset", b"", 3),  # rewritten (a retried job)
        (5, b"abcde", LogPiece(b"ab", 0, 2), "reset", b"", 5),  # shorter than what was sent
        (1, b"a", LogPiece(b"a\xc3", 0, 2), "", b"", 1),  # half a character: wait for it
        (1, b"a", LogPiece(b"a\xc3\xa9", 0, 3), "log", "é".encode(), 3),
    ],
)
def test_what_a_log_stream_sends(
    offset: int, seen: bytes, piece: LogPiece, event: str, data: bytes, after: int
) -> None:
    step = next_step(offset=offset, seen=seen, piece=piece)
    assert (step.event, step.data, step.offset) == (event, data, after)


def test_a_finished_log_sends_its_last_bytes_even_if_cut_mid_character() -> None:
    step = next_step(offset=0, seen=b"", piece=LogPiece(b"x\xc3", 0, 2), final=True)
    assert (step.event, step.data) == ("log", b"x\xc3")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "/projects"),
        ("", "/projects"),
        ("/projects/app", "/projects/app"),
        ("//evil.example", "/projects"),
        ("https://evil.example/", "/projects"),
        ("/\\evil.example", "/projects"),
        ("projects", "/projects"),
    ],
)
def test_sign_in_leads_only_to_this_site(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


def test_durations_and_ages_read_like_a_person_would_say_them() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert duration(None) == "—"
    assert duration(0.42) == "0.4 s"
    assert duration(125) == "2 min 05 s"
    assert ago(now - timedelta(seconds=5), now) == "5 s ago"
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now - timedelta(hours=2, minutes=5), now) == "2 h ago"
    assert ago(now + timedelta(seconds=3), now) == "0 s ago"  # clocks a little apart
    assert ago(None) == "—"
    assert elapsed(None, None) is None
    assert elapsed(now - timedelta(seconds=9), now) == 9.0
    assert short_sha("0123456789abcdef") == "01234567"
    assert short_sha(None) == "—"
