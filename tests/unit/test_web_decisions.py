"""The web UI's pure decisions: what a log stream sends, where a sign-in may lead, how long
ago and how long things were (sign-in back-off: tests/unit/test_backoff.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.web.signin import safe_next
from backend.web.streams import next_step
from backend.web.views import ago, duration, elapsed, short_sha


@pytest.mark.parametrize(
    ("sent", "current", "event", "text"),
    [
        ("", "", "", ""),
        ("abc", "abc", "", ""),
        ("abc", "abcdef", "log", "def"),
        ("", "line\n", "log", "line\n"),
        ("abc", "xyz", "reset", "xyz"),  # rewritten (a GitLab job retried): send it whole
    ],
)
def test_what_a_log_stream_sends(sent: str, current: str, event: str, text: str) -> None:
    step = next_step(sent, current)
    assert (step.event, step.text, step.offset) == (event, text, len(current))


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
