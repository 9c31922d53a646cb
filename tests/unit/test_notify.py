"""nakama.notify: events, bodies, the signature and which target URLs are refused (issue 14)."""

from __future__ import annotations

import pytest

from nakama.notify import (
    CrashLoop,
    PipelineEnd,
    crash_bodies,
    crash_looping,
    event_of,
    private_address,
    signature,
    slack_body,
    url_problem,
    wants,
    webhook_body,
)

END = PipelineEnd(
    pipeline_id=7,
    project="alice-app",
    kind="build",
    status="failed",
    commit="0123456789abcdef0123456789abcdef01234567",
    branch="main",
    error="uv: no such package",
    app_url="http://alice-app.localhost:8000/",
)


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # The published example HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    assert signature("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


@pytest.mark.parametrize(
    ("status", "event"),
    [("failed", "pipeline.failed"), ("success", "deploy.succeeded"), ("canceled", None)],
)
def test_event_of(status: str, event: str | None) -> None:
    end = PipelineEnd(**{**END.__dict__, "status": status})
    assert event_of(end) == event


def test_failures_always_deploys_when_asked() -> None:
    assert wants("pipeline.failed", on_deploy=False)
    assert not wants("deploy.succeeded", on_deploy=False)
    assert wants("deploy.succeeded", on_deploy=True)


def test_bodies() -> None:
    body = webhook_body("pipeline.failed", END)
    assert body["pipeline"] == {
        "id": 7,
        "kind": "build",
        "status": "failed",
        "commit": END.commit,
        "branch": "main",
        "error": "uv: no such package",
    }
    assert slack_body("pipeline.failed", END) == {
        "text": ":x: alice-app: build of 01234567 on main failed: uv: no such package"
    }
    live = PipelineEnd(**{**END.__dict__, "status": "success", "error": None})
    assert slack_body("deploy.succeeded", live)["text"].endswith(
        "01234567 on main is live at http://alice-app.localhost:8000/"
    )


@pytest.mark.parametrize(
    ("addresses", "found"),
    [
        (["93.184.216.34"], None),
        (["2606:2800:220:1:248:1893:25c8:1946"], None),
        (["93.184.216.34", "127.0.0.1"], "127.0.0.1"),
        (["10.0.0.1"], "10.0.0.1"),
        (["172.16.5.4"], "172.16.5.4"),
        (["192.168.1.1"], "192.168.1.1"),
        (["100.64.0.1"], "100.64.0.1"),  # carrier-grade NAT
        (["169.254.169.254"], "169.254.169.254"),
        (["0.0.0.0"], "0.0.0.0"),  # noqa: S104 (an address to refuse, not to bind)
        (["::1"], "::1"),
        (["fe80::1%eth0"], "fe80::1%eth0"),
        (["fc00::1"], "fc00::1"),
        (["::ffff:10.0.0.1"], "::ffff:10.0.0.1"),
        (["224.0.0.1"], "224.0.0.1"),
    ],
)
def test_private_address(addresses: list[str], found: str | None) -> None:
    assert private_address(addresses) == found


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", None),
        ("http://example.com:8080/hook", None),
        ("ftp://example.com/", "must be http:// or https://"),
        ("https:///no-host", "must be http:// or https://"),
        ("https://u:p@example.com/", "must not hold credentials"),
        ("https://example.com:99999/", "does not parse"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_url_problem(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("state", "restarts", "looping"),
    [
        ("backoff", 3, True),
        ("crashed", 7, True),
        ("backoff", 2, False),  # one or two crashes are not a loop yet
        ("running", 9, False),  # up again after many restarts
        ("starting", 5, False),
        ("sleeping", 4, False),
    ],
)
def test_crash_looping(state: str, restarts: int, looping: bool) -> None:
    assert crash_looping(state, restarts, min_restarts=3) is looping


def test_crash_bodies() -> None:
    crash = CrashLoop(
        project="sales",
        state="backoff",
        restarts=4,
        detail="stopped: exited with code 1; restarts=4",
        app_url="http://sales.localhost:8000",
    )
    bodies = crash_bodies(crash)
    assert bodies["webhook"] == {
        "event": "app.crashing",
        "project": "sales",
        "app": {"state": "backoff", "restarts": 4, "detail": crash.detail},
        "app_url": "http://sales.localhost:8000",
    }
    assert bodies["slack"]["text"] == (
        ":rotating_light: sales: the app keeps crashing (4 restarts): "
        "stopped: exited with code 1; restarts=4"
    )
