"""The project page's Notifications card, against a real ``nakama up`` (loopback targets allowed
by the operator): alice, the owner, adds a target and sees its signing secret once, on a page of
its own; a failed build reaches it; bob, a developer, sees the card without the form and cannot
add or remove; a stranger's forms answer 404."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator

import pytest

from tests.e2e.nakama_server import NakamaProcess, clone, git, git_push, wait_for
from tests.integration.test_notifications import BROKEN, Receiver, receiver  # noqa: F401
from tests.integration.test_web_security import PASSWORDS, Browser, serve_with_users

PROJECT = "web-notify"


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    yield from serve_with_users(
        tmp_path_factory.mktemp("web-notifications"),
        extra_env={
            "NAKAMA_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS": "true",
            "NAKAMA_NOTIFICATIONS__INTERVAL_S": "0.2",
        },
    )


def signed_in(nakama: NakamaProcess, who: str) -> Browser:
    browser = Browser(nakama)
    assert browser.sign_in(who, PASSWORDS[who]).status_code == 303
    return browser


def test_the_owner_adds_a_target_and_sees_its_secret_once(
    nakama: NakamaProcess,
    receiver: Receiver,  # noqa: F811
) -> None:
    alice, bob = signed_in(nakama, "alice"), signed_in(nakama, "bob")
    try:
        made = alice.post("/projects", {"name": PROJECT})
        assert made.status_code == 303, made.text
        wait_for(
            lambda: nakama.project(PROJECT)["status"] == "running", timeout=120, what="deployed"
        )
        page = alice.http.get(f"/projects/{PROJECT}")
        assert 'id="notifications"' in page.text and 'id="target-form"' in page.text

        # Bob is no member: the form answers 404 and adds nothing.
        stranger = bob.post(f"/projects/{PROJECT}/notifications", {"url": receiver.url + "/b"})
        assert stranger.status_code == 404

        url = receiver.url + "/alice/secret-path"
        added = alice.post(f"/projects/{PROJECT}/notifications", {"url": url, "kind": "webhook"})
        assert added.status_code == 200, added.text
        found = re.search(r'<pre id="target-secret">([^<]+)</pre>', added.text)
        assert found, added.text
        secret = found[1]
        assert "secret-path" not in added.text
        assert not [name for name, value in added.headers.items() if secret in value]
        page = alice.http.get(f"/projects/{PROJECT}")
        assert receiver.url in page.text and secret not in page.text
        assert "secret-path" not in page.text

        # Bob as a developer: the card, no form; his posts are refused.
        shared = nakama.api.put(
            f"/api/v1/projects/{PROJECT}/members/bob", json={"role": "developer"}
        )
        assert shared.status_code == 200, shared.text
        page = bob.http.get(f"/projects/{PROJECT}")
        assert 'id="notifications"' in page.text and 'id="target-form"' not in page.text
        assert bob.post(f"/projects/{PROJECT}/notifications", {"url": url}).status_code == 403
        [target] = nakama.api.get(f"/api/v1/projects/{PROJECT}/notifications").json()
        removed = bob.post(f"/projects/{PROJECT}/notifications/{target['id']}/delete", {})
        assert removed.status_code == 403

        # A failed build reaches alice's target, signed with the secret she was shown.
        work = clone(nakama, PROJECT, nakama.data_dir.parent / "work")
        (work / "requirements.txt").write_text(BROKEN)
        git("commit", "-qam", "broken", cwd=work)
        git_push(work)
        wait_for(lambda: receiver.got, timeout=120, what="the failure notification")
        [got] = receiver.got
        mac = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["X-Nakama-Signature"] == "sha256=" + mac

        # A refused URL comes back with the reason (test_notifications covers each refusal).
        bad = alice.post(f"/projects/{PROJECT}/notifications", {"url": "ftp://x/"})
        assert bad.status_code == 303
        assert "must be http:// or https://" in alice.http.get(f"/projects/{PROJECT}").text

        gone = alice.post(f"/projects/{PROJECT}/notifications/{target['id']}/delete", {})
        assert gone.status_code == 303
        assert "No notification targets." in alice.http.get(f"/projects/{PROJECT}").text
    finally:
        alice.close()
        bob.close()
