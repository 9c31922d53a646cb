"""Deploy notifications (issue 14): a project's owner adds a signed webhook or a Slack-compatible
target; a failed pipeline (and, if asked, a deploy) reaches it, signed, retried on 5xx; targets
on private addresses are refused unless the operator allows them; another user sees and
changes nothing of them. A loopback receiver checks what arrives."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from nakama.db.tables import NotificationTarget
from nakama.settings import NotificationSettings
from tests.e2e.nakama_server import TINY_APP, wait_for, write_tiny_kit
from tests.integration.test_quotas import World, local_settings, served

BROKEN = "this is not a requirement ===\n"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP server that records every POST and answers with ``statuses`` in turn
    (200 once they are used up)."""

    url: str
    got: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.got.append(Received(self.path, dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def notifying(root: Path, database_url: str, **changes: Any) -> Any:
    base = local_settings(root, database_url)
    settings = NotificationSettings(
        interval_s=0.1, backoff_initial_s=0.05, backoff_max_s=0.2, **changes
    )
    return base.model_copy(update={"notifications": settings})


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    """Alice owns a running app; bob is another user; targets on loopback are allowed."""
    with served(notifying(tmp_path, database_url, allow_private_targets=True), tmp_path) as w:
        w.user("alice"), w.user("bob")
        assert w.create("alice", "alice-app").status_code == 201
        w.settle("alice-app")
        yield w


def add(world: World, who: str, body: dict[str, Any]) -> Any:
    return world.apis[who].post("/api/v1/projects/alice-app/notifications", json=body)


def test_a_failed_build_reaches_the_webhook_signed_with_its_secret(
    world: World, receiver: Receiver
) -> None:
    made = add(world, "alice", {"kind": "webhook", "url": receiver.url + "/hooks/nakama"})
    assert made.status_code == 201, made.text
    target = made.json()
    secret = target["secret"]
    assert secret and target["url"] == receiver.url + "/…"
    commit = world.push("alice", "alice-app", version="v2", requirements=BROKEN)
    wait_for(lambda: receiver.got, timeout=60, what="the failure notification")
    [got] = receiver.got
    assert got.path == "/hooks/nakama"
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Nakama-Signature"] == expected
    assert got.headers["X-Nakama-Event"] == "pipeline.failed"
    body = got.json()
    assert body["event"] == "pipeline.failed" and body["project"] == "alice-app"
    assert (body["pipeline"]["status"], body["pipeline"]["commit"]) == ("failed", commit)
    assert body["pipeline"]["error"]
    # The deploy before it (no on_deploy) and later steps send nothing more.
    world.platform.notifications.step()  # type: ignore[union-attr]
    assert len(receiver.got) == 1
    # The target is shown without its path, and never with its secret again.
    [listed] = world.apis["alice"].get("/api/v1/projects/alice-app/notifications").json()
    assert listed == {"id": target["id"], "kind": "webhook", "url": receiver.url + "/…",
                      "on_deploy": False}  # fmt: skip
    log = (world.root / "data").rglob("*.log")
    assert all(secret not in p.read_text(errors="replace") for p in log)
    # Stored encrypted, as secret variables are.
    with world.platform.db.engine.connect() as c:
        [(url, stored_secret)] = c.execute(text("SELECT url, secret FROM notification_targets"))
    assert url.startswith("fernet:") and stored_secret.startswith("fernet:")
    assert "/hooks/nakama" not in url and secret not in stored_secret


def test_a_slack_target_asked_for_deploys_says_where_the_app_is(
    world: World, receiver: Receiver
) -> None:
    made = add(
        world, "alice", {"kind": "slack", "url": receiver.url + "/T0/B0/x", "on_deploy": True}
    )
    assert made.status_code == 201, made.text
    assert made.json()["secret"] is None
    commit = world.push("alice", "alice-app", version="v2")
    world.settle("alice-app", commit=commit)
    wait_for(lambda: receiver.got, timeout=60, what="the deploy notification")
    [got] = receiver.got
    text = got.json()["text"]
    assert f"alice-app: {commit[:8]} on main is live at " in text
    assert "X-Nakama-Signature" not in got.headers


def test_a_target_answering_503_gets_it_again_and_a_400_ends_it(
    world: World, receiver: Receiver
) -> None:
    receiver.statuses[:] = [503, 503]
    assert add(world, "alice", {"url": receiver.url + "/a"}).status_code == 201
    world.push("alice", "alice-app", version="v2", requirements=BROKEN)
    wait_for(lambda: len(receiver.got) >= 3, timeout=60, what="two retries")
    first, *again = receiver.got
    assert all(r.headers["X-Nakama-Delivery"] == first.headers["X-Nakama-Delivery"] for r in again)
    assert all(r.body == first.body for r in again)
    receiver.got.clear()
    receiver.statuses[:] = [400]
    world.push("alice", "alice-app", version="v3", requirements=BROKEN + "# again\n")
    wait_for(lambda: receiver.got, timeout=60, what="the second failure")
    world.platform.notifications.step()  # type: ignore[union-attr]
    assert len(receiver.got) == 1  # a 400 is not tried again


def test_another_user_sees_and_changes_nothing_of_the_targets(
    world: World, receiver: Receiver
) -> None:
    made = add(world, "alice", {"url": receiver.url + "/secret-path"})
    target_id = made.json()["id"]
    path = "/api/v1/projects/alice-app/notifications"
    bob = world.apis["bob"]
    assert bob.get(path).status_code == 404
    assert bob.post(path, json={"url": receiver.url + "/bob"}).status_code == 404
    assert bob.delete(f"{path}/{target_id}").status_code == 404
    # A developer of the project sees them (scheme and host only) but may not change them.
    shared = world.apis["alice"].put(
        "/api/v1/projects/alice-app/members/bob", json={"role": "developer"}
    )
    assert shared.status_code == 200, shared.text
    seen = bob.get(path)
    assert seen.status_code == 200 and "secret-path" not in seen.text
    assert bob.post(path, json={"url": receiver.url + "/bob"}).status_code == 403
    assert bob.delete(f"{path}/{target_id}").status_code == 403
    # Bob's own project's pipelines never reach alice's target.
    assert world.create("bob", "bob-app").status_code == 201
    world.settle("bob-app")
    world.push("bob", "bob-app", version="v2", requirements=BROKEN)
    world.settle("bob-app")
    world.platform.notifications.step()  # type: ignore[union-attr]
    assert receiver.got == []
    # Alice removes it; deleting the project would have too.
    assert world.apis["alice"].delete(f"{path}/{target_id}").status_code == 204
    assert world.apis["alice"].get(path).json() == []


def test_deleting_the_project_removes_its_targets(world: World, receiver: Receiver) -> None:
    assert add(world, "alice", {"url": receiver.url + "/a"}).status_code == 201
    assert world.apis["alice"].delete("/api/v1/projects/alice-app").status_code == 202
    with world.platform.db.read() as s:

        def left() -> int:
            return int(s.scalar(select(func.count()).select_from(NotificationTarget)) or 0)

        wait_for(lambda: left() == 0, timeout=30, what="the targets removed")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9/x", "loopback, private or link-local address (127.0.0.1)"),
        ("http://localhost:9/x", "loopback, private or link-local address"),
        ("http://10.1.2.3/x", "(10.1.2.3)"),
        ("http://169.254.169.254/latest/meta-data", "(169.254.169.254)"),
        ("http://[::1]:9/x", "(::1)"),
        ("http://[::ffff:127.0.0.1]/x", "(::ffff:127.0.0.1)"),
        ("ftp://example.com/x", "must be http:// or https://"),
        ("https://user:pw@example.com/x", "must not hold credentials"),
        ("https://example.com:notaport/x", "does not parse"),
    ],
)
def test_private_and_malformed_targets_are_refused_by_default(
    database_url: str, tmp_path: Path, url: str, says: str
) -> None:
    with served(notifying(tmp_path, database_url), tmp_path) as world:
        world.user("alice")
        assert world.create("alice", "alice-app").status_code == 201
        refused = add(world, "alice", {"url": url})
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert says in detail
        if "address" in says:
            assert "NAKAMA_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS=true" in detail
        assert "pw" not in detail
        assert world.apis["alice"].get("/api/v1/projects/alice-app/notifications").json() == []


# The tiny app, which (with CRASH=1) exits half a second after it starts answering.
CRASHING_APP = TINY_APP.replace(
    "print(",
    'import threading\nif os.environ.get("CRASH") == "1":\n'
    "    threading.Timer(0.5, lambda: os._exit(3)).start()\nprint(",
    1,
)


def test_an_app_crashing_repeatedly_is_told_once_per_crash_loop(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    base = notifying(
        tmp_path, database_url, allow_private_targets=True, crash_check_s=0.2, crash_restarts=3
    )
    runtime = base.runtime.model_copy(
        update={"restart_backoff_initial_s": 0.1, "restart_backoff_max_s": 0.3}
    )
    kit = write_tiny_kit(tmp_path / "crash-kit", app=CRASHING_APP)
    settings = base.model_copy(update={"runtime": runtime, "starter_kit_dir": kit})
    with served(settings, tmp_path) as w:
        w.user("alice"), w.user("bob")
        for who in ("alice", "bob"):
            assert w.create(who, f"{who}-app").status_code == 201
            w.settle(f"{who}-app")
        secrets: dict[str, str] = {}
        for who in ("alice", "bob"):
            made = w.apis[who].post(
                f"/api/v1/projects/{who}-app/notifications",
                json={"kind": "webhook", "url": f"{receiver.url}/{who}"},
            )
            assert made.status_code == 201, made.text
            secrets[who] = made.json()["secret"]

        def crashes(who: str) -> list[Received]:
            return [
                g
                for g in receiver.got
                if g.path == f"/{who}" and g.headers["X-Nakama-Event"] == "app.crashing"
            ]

        crash = w.apis["alice"].put(
            "/api/v1/projects/alice-app/variables/CRASH", json={"value": "1"}
        )
        assert crash.status_code == 200, crash.text
        wait_for(lambda: crashes("alice"), timeout=60, what="the crash-loop notification")
        [got] = crashes("alice")
        mac = hmac.new(secrets["alice"].encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["X-Nakama-Signature"] == "sha256=" + mac
        body = got.json()
        assert body["event"] == "app.crashing" and body["project"] == "alice-app"
        assert body["app"]["state"] in ("backoff", "crashed") and body["app"]["restarts"] >= 3
        assert "exited with code 3" in body["app"]["detail"]
        # Still crashing: no second notification; bob's healthy app tells his target nothing.
        restarts = body["app"]["restarts"]
        wait_for(
            lambda: w.platform.runtime.status("alice-app").restarts >= restarts + 2,
            timeout=30,
            what="more restarts",
        )
        assert len(crashes("alice")) == 1 and crashes("bob") == []

        # Fixed (a restart without CRASH), then crashing again: a new loop, told again.
        fixed = w.apis["alice"].delete("/api/v1/projects/alice-app/variables/CRASH")
        assert fixed.status_code == 204, fixed.text
        wait_for(
            lambda: w.project("alice-app")["app_state"] == "running", timeout=30, what="up again"
        )
        w.platform.notifications.crash_step()  # type: ignore[union-attr]
        again = w.apis["alice"].put(
            "/api/v1/projects/alice-app/variables/CRASH", json={"value": "1"}
        )
        assert again.status_code == 200, again.text
        wait_for(lambda: len(crashes("alice")) == 2, timeout=60, what="the second crash loop")
        assert crashes("bob") == []
