"""Nakama's forward-auth verify endpoint behind a real nginx (Debian's) with ``auth_request``, as
an operator puts it in front of apps (and as ingress-nginx does with its ``auth-url`` and
``auth-signin`` annotations): nginx asks ``/gateway/verify`` before each request, passes
``X-Forwarded-User`` on to the app, sends a signed-out browser to Nakama's sign-in, and routes
``/_nakama/`` on the app's host to Nakama for the sign-in's way back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.nakama_server import NakamaProcess, write_tiny_kit
from tests.integration.test_web_security import PASSWORDS, Browser
from tests.support import free_port, serve

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    server_name *.apps.test;
    location = /_nakama_auth {{
      internal;
      proxy_pass http://127.0.0.1:{nakama}/gateway/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    }}
    location /_nakama/ {{
      proxy_pass http://127.0.0.1:{nakama};
      proxy_set_header Host $http_host;
    }}
    location / {{
      auth_request /_nakama_auth;
      auth_request_set $nakama_user $upstream_http_x_forwarded_user;
      proxy_set_header X-Forwarded-User $nakama_user;
      error_page 401 = @sign_in;
      proxy_pass http://127.0.0.1:{app};
    }}
    location @sign_in {{
      return 302 http://127.0.0.1:{nakama}/gateway/sign-in?rd=$scheme://$http_host$request_uri;
    }}
  }}
}}
"""


async def echo_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The app behind nginx: answers with the headers it got."""
    if scope["type"] != "http":
        return
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    body = json.dumps({"path": scope["path"], "headers": headers}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("verify-nginx")
    server = NakamaProcess(
        data_dir=root / "data",
        starter_kit=write_tiny_kit(root / "kit"),
        uv_cache=root / "uv-cache",
        extra_env={"NAKAMA_APPS_DOMAIN": "apps.test"},
    )
    server.start()
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
    server.tokens = {}  # type: ignore[attr-defined]
    for name in ("report", "open"):
        assert server.api.post("/api/v1/projects", json={"name": name}).status_code == 201
    server.api.patch("/api/v1/projects/open", json={"visibility": "public"})
    server.api.put("/api/v1/projects/report/members/alice", json={"role": "viewer"})
    yield server
    server.close()
    server.kill_apps()


@pytest.fixture(scope="module")
def nginx(nakama: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    assert Path(NGINX).is_file(), "nginx is missing: apt-get install nginx-light (or nginx)"
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    with serve(echo_app) as app_url:
        app_port = int(app_url.rsplit(":", 1)[1])
        conf = tmp / "nginx.conf"
        conf.write_text(CONFIG.format(tmp=tmp, port=port, nakama=nakama.port, app=app_port))
        proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        try:
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stderr is not None:
                proc.stderr.close()


def through_nginx(port: int, app: str, path: str = "/", **headers: str) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{port}{path}",
        headers={"Host": f"{app}.apps.test:{port}", **headers},
        timeout=10,
    )


def user_token(nakama: NakamaProcess, username: str) -> str:
    r = nakama.api.post(f"/api/v1/users/{username}/tokens")
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_signed_out_request_is_sent_to_nakamas_sign_in(nginx: int, nakama: NakamaProcess) -> None:
    r = through_nginx(nginx, "report", "/q?x=1")
    assert r.status_code == 302
    target = urlsplit(r.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{nakama.url}/gateway/sign-in"
    assert parse_qs(target.query)["rd"] == [f"http://report.apps.test:{nginx}/q?x=1"]


def test_a_member_gets_through_and_the_app_learns_who_it_is(
    nginx: int, nakama: NakamaProcess
) -> None:
    alice = user_token(nakama, "alice")
    r = through_nginx(nginx, "report", Authorization=f"Bearer {alice}", **{
        "X-Forwarded-User": "root"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-forwarded-user"] == "alice"


def test_a_user_the_app_is_not_shared_with_is_refused(nginx: int, nakama: NakamaProcess) -> None:
    bob = user_token(nakama, "bob")
    assert through_nginx(nginx, "report", Authorization=f"Bearer {bob}").status_code == 403
    assert through_nginx(nginx, "report", Authorization="Bearer nkm_wrong-0000").status_code == 302


def test_public_apps_open_and_unknown_ones_are_refused(nginx: int) -> None:
    r = through_nginx(nginx, "open")
    assert r.status_code == 200
    assert r.json()["headers"].get("x-forwarded-user", "") == ""
    assert through_nginx(nginx, "nothing-here").status_code == 403  # never a 500 from nginx


def test_the_sign_in_comes_back_through_nginx_with_the_apps_own_cookie(
    nginx: int, nakama: NakamaProcess
) -> None:
    browser = Browser(nakama)
    try:
        assert browser.sign_in("alice", PASSWORDS["alice"]).status_code == 303
        rd = f"http://report.apps.test:{nginx}/week?n=49"
        r = browser.http.get("/gateway/sign-in", params={"rd": rd})
        assert r.status_code == 303, r.text
        callback = urlsplit(r.headers["location"])
        assert callback.netloc == f"report.apps.test:{nginx}"
        assert callback.path == "/_nakama/callback"
        r = through_nginx(nginx, "report", f"{callback.path}?{callback.query}")
        assert r.status_code == 303 and r.headers["location"] == "/week?n=49"
        cookie = r.headers["set-cookie"].split(";", 1)[0]
        r = through_nginx(nginx, "report", "/week?n=49", Cookie=cookie)
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-forwarded-user"] == "alice"
        # An rd that is no app of this Nakama is refused, not followed.
        r = browser.http.get("/gateway/sign-in", params={"rd": "https://evil.example/"})
        assert r.status_code == 404
    finally:
        browser.close()
