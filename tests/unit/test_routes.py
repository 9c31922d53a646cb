"""The gateway's route table (backend/local/routes.py): switching, counting, draining, idling."""

from __future__ import annotations

import threading
import time

from backend.local.routes import Routes


def test_switch_returns_the_old_port_and_new_requests_go_to_the_new_one() -> None:
    routes = Routes()
    assert routes.switch("app", 9001) is None
    assert routes.switch("app", 9002) == 9001
    with routes.forward("app") as port:
        assert port == 9002
    assert routes.clear("app") == 9002
    with routes.forward("app") as port:
        assert port is None


def test_drain_waits_for_the_old_ports_requests_only() -> None:
    routes = Routes()
    routes.switch("app", 9001)
    started, release = threading.Event(), threading.Event()

    def slow_request() -> None:
        with routes.forward("app"):
            started.set()
            release.wait(5)

    worker = threading.Thread(target=slow_request)
    worker.start()
    started.wait(5)
    routes.switch("app", 9002)
    with routes.forward("app") as port:  # a new request does not hold the old port
        assert port == 9002
        assert routes.in_flight("app", 9001) == 1
        assert routes.drain("app", 9001, timeout_s=0.1) is False
        threading.Timer(0.2, release.set).start()
        t = time.monotonic()
        assert routes.drain("app", 9001, timeout_s=5) is True
        assert 0.1 < time.monotonic() - t < 4
    worker.join()


def test_an_app_that_just_came_up_is_not_idle() -> None:
    routes = Routes()
    routes.switch("app", 9001)
    with routes.forward("app"):
        assert routes.idle_s("app") == 0.0  # in flight
    time.sleep(0.2)
    assert routes.idle_s("app") >= 0.2
    routes.switch("app", 9002)  # woken or redeployed: a whole idle period again
    assert routes.idle_s("app") < 0.1
