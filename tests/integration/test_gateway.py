"""The app gateway against a real ``nakama up`` and real app processes: every app at
``<name>.localhost:<port>``, who gets in (private, internal, public; members, other users,
nobody), the sign-in hop with its one-time code, what an app sees of the request (no Nakama
cookie or token, who the viewer is) and may set (never Nakama's cookies), and bad Host headers.

Python does not resolve ``*.localhost``: requests go to 127.0.0.1 with the app's Host header,
as a browser's would arrive."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, wait_for, write_tiny_kit
from tests.integration.test_web_security import PASSWORDS, Browser

# Answers every GET with the request's headers as JSON; /set-cookie tries to set Nakama's
# cookies and a cookie of its own for the whole *.localhost domain.
ECHO_APP = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"path": self.path, "headers": headers}).encode()
        self.send_response(200)
        if self.path == "/set-cookie":
            self.send_header("Set-Cookie", "nakama_session=forged; Path=/; Domain=localhost")
            self.send_header("Set-Cookie", "nakama_app=forged; Path=/")
            self.send_header("Set-Cookie", "theme=dark; Path=/; Domain=localhost; HttpOnly")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("gateway")
    kit = write_tiny_kit(root / "kit", app=ECHO_APP)
    server = NakamaProcess(data_dir=root / "data", starter_kit=kit, uv_cache=root / "uv-cache")
    server.start()
    tokens = {}
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        tokens[username] = r.json()["token"]
    server.tokens = tokens  # type: ignore[attr-defined]
    for name in ("gw-private", "gw-internal", "gw-public"):
        r = server.api.post("/api/v1/projects", json={"name": name})
        assert r.status_code == 201, r.text
    for name in ("gw-private", "gw-internal", "gw-public"):
        commit = server.pipelines(name)[0]["commit"]
        server.wait_deployed(name, commit)
    server.api.patch("/api/v1/projects/gw-internal", json={"visibility": "internal"})
    server.api.patch("/api/v1/projects/gw-public", json={"visibility": "public"})
    r = server.api.put("/api/v1/projects/gw-private/members/alice", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    yield server
    server.close()


def token(nakama: NakamaProcess, user: str) -> str:
    return str(nakama.tokens[user])  # type: ignore[attr-defined]


def app_get(
    nakama: NakamaProcess, app: str, path: str = "/", *, host: str | None = None, **kwargs: object
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
    headers["Host"] = host or f"{app}.localhost:{nakama.port}"
    return httpx.get(f"{nakama.url}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_app_url_is_the_apps_own_address(nakama: NakamaProcess) -> None:
    project = nakama.project("gw-private")
    assert project["app_url"] == f"http://gw-private.localhost:{nakama.port}/"
    assert project["visibility"] == "private"


@pytest.mark.parametrize(
    ("app", "user", "status"),
    [
        ("gw-private", None, 401),
        ("gw-private", "bob", 403),  # signed in, not a member
        ("gw-private", "alice", 200),  # a viewer
        ("gw-private", "admin", 200),
        ("gw-internal", None, 401),
        ("gw-internal", "bob", 200),  # any signed-in user
        ("gw-public", None, 200),
        ("gw-public", "bob", 200),
    ],
)
def test_who_may_open_an_app(
    nakama: NakamaProcess, app: str, user: str | None, status: int
) -> None:
    headers = {}
    if user is not None:
        headers = bearer(ADMIN_TOKEN if user == "admin" else token(nakama, user))
    r = app_get(nakama, app, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "sign in" in r.json()["detail"].lower()


def test_a_wrong_token_is_refused_and_never_forwarded(nakama: NakamaProcess) -> None:
    r = app_get(nakama, "gw-public", headers=bearer("nkm_not-a-real-token-000000000"))
    assert r.status_code == 401


def test_a_browser_without_a_session_is_sent_to_sign_in(nakama: NakamaProcess) -> None:
    r = app_get(nakama, "gw-private", "/report?q=1", headers={"Accept": "text/html"})
    assert r.status_code == 303
    target = urlsplit(r.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == nakama.url
    assert target.path == "/gateway/sign-in"
    assert parse_qs(target.query) == {"app": ["gw-private"], "next": ["/report?q=1"]}


def sign_in_hop(nakama: NakamaProcess, browser: Browser, app: str, next_path: str) -> str:
    """Walk the sign-in hop as a browser does; returns the callback URL with its code."""
    r = browser.http.get("/gateway/sign-in", params={"app": app, "next": next_path})
    assert r.status_code == 303, r.text
    callback = r.headers["location"]
    assert callback.startswith(f"http://{app}.localhost:{nakama.port}/_nakama/callback?code=")
    return callback


def follow_callback(nakama: NakamaProcess, app: str, callback: str) -> httpx.Response:
    parts = urlsplit(callback)
    return app_get(nakama, app, f"{parts.path}?{parts.query}")


def test_sign_in_hop_gives_the_app_its_own_cookie_once(nakama: NakamaProcess) -> None:
    browser = Browser(nakama)
    try:
        # Not signed in to Nakama: first the usual sign-in page, then back to the hop.
        r = browser.http.get("/gateway/sign-in", params={"app": "gw-private", "next": "/x?y=1"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert browser.sign_in("alice", PASSWORDS["alice"]).status_code == 303
        callback = sign_in_hop(nakama, browser, "gw-private", "/x?y=1")

        r = follow_callback(nakama, "gw-private", callback)
        assert r.status_code == 303 and r.headers["location"] == "/x?y=1"
        set_cookie = r.headers["set-cookie"]
        assert set_cookie.startswith("nakama_app=")
        assert "httponly" in set_cookie.lower() and "domain" not in set_cookie.lower()
        app_cookie = set_cookie.split(";", 1)[0]

        # The cookie opens the app; the app sees neither it nor the code, and learns who it is.
        r = app_get(nakama, "gw-private", "/x?y=1", headers={"Cookie": f"{app_cookie}; own=1"})
        assert r.status_code == 200, r.text
        seen = r.json()["headers"]
        assert seen.get("cookie") == "own=1"
        assert seen["x-forwarded-user"] == "alice"
        assert "code" not in r.json()["path"]

        # The code works once; a forged one, or one for another app, not at all.
        assert follow_callback(nakama, "gw-private", callback).status_code == 400
        forged = callback.split("code=")[0] + "code=forged&next=%2F"
        assert follow_callback(nakama, "gw-private", forged).status_code == 400
        other = sign_in_hop(nakama, browser, "gw-private", "/")
        assert (
            follow_callback(
                nakama, "gw-public", other.replace("gw-private", "gw-public")
            ).status_code
            == 400
        )

        # The app cookie is no key to another app, nor to Nakama's pages.
        assert app_get(nakama, "gw-internal", headers={"Cookie": app_cookie}).status_code == 401
        page = httpx.get(f"{nakama.url}/projects", headers={"Cookie": app_cookie})
        assert page.status_code == 303

        # Signing out of Nakama ends the app session too.
        browser.post("/logout", {})
        r = app_get(nakama, "gw-private", headers={"Cookie": app_cookie})
        assert r.status_code == 401
    finally:
        browser.close()


def test_sign_in_hop_refuses_a_user_the_app_is_not_shared_with(nakama: NakamaProcess) -> None:
    browser = Browser(nakama)
    try:
        assert browser.sign_in("bob", PASSWORDS["bob"]).status_code == 303
        r = browser.http.get("/gateway/sign-in", params={"app": "gw-private", "next": "/"})
        assert r.status_code == 403
        assert "not shared with you" in r.text
        r = browser.http.get("/gateway/sign-in", params={"app": "no-such-app", "next": "/"})
        assert r.status_code == 404
    finally:
        browser.close()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "\\\\evil", "x"])
def test_the_callback_never_redirects_off_the_apps_host(nakama: NakamaProcess, target: str) -> None:
    browser = Browser(nakama)
    try:
        assert browser.sign_in("alice", PASSWORDS["alice"]).status_code == 303
        callback = sign_in_hop(nakama, browser, "gw-private", target)
        r = follow_callback(nakama, "gw-private", callback)
        assert r.status_code == 303
        assert r.headers["location"] == "/"
    finally:
        browser.close()


def test_nakama_cookies_and_token_never_reach_an_app(nakama: NakamaProcess) -> None:
    forged = {
        "Cookie": "nakama_session=stolen; nakama_app=x; __Host-nakama_app=y; keep=me",
        "X-Forwarded-User": "root",
        "X-Forwarded-Email": "root@example.com",
        **bearer(token(nakama, "alice")),
    }
    r = app_get(nakama, "gw-private", headers=forged)
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["cookie"] == "keep=me"
    assert "authorization" not in seen
    assert seen["x-forwarded-user"] == "alice"
    assert "x-forwarded-email" not in seen
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"gw-private.localhost:{nakama.port}"
    assert seen["x-forwarded-for"].endswith("127.0.0.1")
    # An app's own Authorization scheme passes through untouched.
    r = app_get(nakama, "gw-public", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.json()["headers"]["authorization"] == "Basic dXNlcjpwYXNz"


def test_an_app_cannot_set_nakama_cookies_or_cookies_for_other_hosts(
    nakama: NakamaProcess,
) -> None:
    r = app_get(nakama, "gw-public", "/set-cookie")
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    assert cookies == ["theme=dark; Path=/; HttpOnly"], cookies


@pytest.mark.parametrize(
    "host",
    [
        "gw-public.localhost:{port}/admin",
        "gw-public.localhost:{port}:{port}",
        "gw-public.localhost:nope",
        "user@gw-public.localhost:{port}",
        "gw-public.localhost:0",
        "gw-public.localhost:99999",
        "gw public.localhost:{port}",
    ],
)
def test_malformed_host_headers_get_400(nakama: NakamaProcess, host: str) -> None:
    r = app_get(nakama, "gw-public", host=host.format(port=nakama.port))
    assert r.status_code == 400, r.text


def test_a_repeated_host_header_gets_400_and_other_apps_keep_serving(
    nakama: NakamaProcess,
) -> None:
    request = (
        f"GET / HTTP/1.1\r\nHost: gw-public.localhost:{nakama.port}\r\n"
        f"Host: gw-private.localhost:{nakama.port}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", nakama.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert app_get(nakama, "gw-public").status_code == 200


def test_unknown_and_deeper_names(nakama: NakamaProcess) -> None:
    r = app_get(nakama, "nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "There is no app called nope" in r.text
    assert "<script" not in r.text.lower()
    # A name under an app's name is no app: Nakama itself answers (here: no such page).
    r = app_get(nakama, "x", "/no-such-page", host=f"a.gw-public.localhost:{nakama.port}")
    assert r.status_code == 404
    assert "detail" in r.json()


def test_visibility_change_applies_at_once(nakama: NakamaProcess) -> None:
    assert app_get(nakama, "gw-internal").status_code == 401
    r = nakama.api.patch("/api/v1/projects/gw-internal", json={"visibility": "public"})
    assert r.status_code == 200
    try:
        assert app_get(nakama, "gw-internal").status_code == 200
    finally:
        nakama.api.patch("/api/v1/projects/gw-internal", json={"visibility": "internal"})
    assert app_get(nakama, "gw-internal").status_code == 401


def test_removing_a_member_closes_the_app_to_them_at_once(nakama: NakamaProcess) -> None:
    bob = bearer(token(nakama, "bob"))
    assert app_get(nakama, "gw-private", headers=bob).status_code == 403
    r = nakama.api.put("/api/v1/projects/gw-private/members/bob", json={"role": "viewer"})
    assert r.status_code == 200
    assert app_get(nakama, "gw-private", headers=bob).status_code == 200
    assert nakama.api.delete("/api/v1/projects/gw-private/members/bob").status_code == 204
    assert app_get(nakama, "gw-private", headers=bob).status_code == 403


def test_metrics_count_requests_per_app_and_need_the_admin_token(nakama: NakamaProcess) -> None:
    for _ in range(3):
        app_get(nakama, "gw-public")
    assert httpx.get(f"{nakama.url}/metrics").status_code == 401
    assert (
        httpx.get(f"{nakama.url}/metrics", headers=bearer(token(nakama, "bob"))).status_code == 401
    )
    text = nakama.api.get("/metrics").text
    found = re.search(r'nakama_gateway_requests_total\{app="gw-public",code="2xx"\} (\d+)', text)
    assert found and float(found.group(1)) >= 3, text[:2000]
    assert "nakama_gateway_request_seconds_bucket" in text
    assert re.search(r'nakama_pipelines\{kind="build",status="success"\} [1-9]', text)
    assert "nakama_webhook_events" in text


def test_an_app_with_no_process_gets_a_page_not_an_error(nakama: NakamaProcess) -> None:
    r = nakama.api.post("/api/v1/projects", json={"name": "gw-fresh"})
    assert r.status_code == 201
    # Right after create, before the first build is up, or once it is: never a 5xx traceback.
    r = app_get(nakama, "gw-fresh", headers={"Accept": "text/html", **bearer(ADMIN_TOKEN)})
    assert r.status_code in (200, 503), r.text
    if r.status_code == 503:
        assert "reloads itself" in r.text and r.headers["retry-after"]
    commit = nakama.pipelines("gw-fresh")[0]["commit"]
    nakama.wait_deployed("gw-fresh", commit)
    wait_for(
        lambda: app_get(nakama, "gw-fresh", headers=bearer(ADMIN_TOKEN)).status_code == 200,
        timeout=10,
        what="gw-fresh to serve",
    )
    body = json.loads(app_get(nakama, "gw-fresh", headers=bearer(ADMIN_TOKEN)).text)
    assert body["headers"]["x-forwarded-user"] == "admin"


def test_distinct_signed_in_viewers_of_the_week_are_counted(nakama: NakamaProcess) -> None:
    before = nakama.project("gw-internal")["viewers_7d"]
    for user in ("alice", "bob", "alice"):
        for _ in range(3):
            r = app_get(nakama, "gw-internal", headers=bearer(token(nakama, user)))
            assert r.status_code == 200
    app_get(nakama, "gw-internal")  # signed out: not a viewer (and not let in)
    wait_for(
        lambda: nakama.project("gw-internal")["viewers_7d"] == max(before, 2),
        timeout=10,
        what="two viewers counted",
    )
    browser = Browser(nakama)
    try:
        assert browser.sign_in("admin", ADMIN_TOKEN).status_code == 303
        page = browser.http.get("/projects/gw-internal")
        assert re.search(r'id="viewers">2 viewers this week', page.text), page.text[:3000]
    finally:
        browser.close()
