"""Cluster mode's crash-loop status (issue 14): read from the app container's status in the
app's pods, as the API returns them for a container in CrashLoopBackOff (the shape of
``kubectl get pod -o json``: ``state.waiting.reason``, ``lastState.terminated``,
``restartCount``)."""

from __future__ import annotations

from typing import Any

from backend.cluster.runtime import crash_of
from nakama.notify import crash_looping


def pod(name: str, *, reason: str | None, restarts: int, container: str = "app") -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container,
                    "ready": reason is None,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
                    if restarts
                    else {},
                }
            ],
        },
    }


def test_a_container_in_crash_loop_back_off_is_backoff_with_its_restarts() -> None:
    status = crash_of(
        [
            pod("demo-1", reason=None, restarts=0),
            pod("demo-2", reason="CrashLoopBackOff", restarts=2),
            pod("demo-3", reason="CrashLoopBackOff", restarts=5),
        ]
    )
    assert status is not None
    assert (status.state, status.restarts) == ("backoff", 5)
    assert status.detail == "CrashLoopBackOff; last exit: Error 1; restarts=5"
    assert crash_looping(status.state, status.restarts, min_restarts=3)


def test_other_waits_and_other_containers_are_no_crash_loop() -> None:
    assert crash_of([pod("demo-1", reason="ImagePullBackOff", restarts=0)]) is None
    assert (
        crash_of([pod("demo-1", reason="CrashLoopBackOff", restarts=4, container="sync")]) is None
    )
    assert crash_of([pod("demo-1", reason=None, restarts=9)]) is None
    assert crash_of([]) is None
