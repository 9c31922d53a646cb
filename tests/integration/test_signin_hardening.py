"""Sign-in and token guessing against a real ``nakama up`` (and a real nginx in front): the
throttle keys on the real client address, is race-free, cannot be turned into a lock-out of
someone else, and wrong API tokens (bearer, or git's basic auth) get 429 with Retry-After.

Clients connect from distinct loopback addresses (127.0.0.x, bound with httpx's
``local_address``): bob, the guesser, from one; alice, whose account he guesses, from another.
The throttle lives in memory, so one server (on SQLite) serves the whole module and each test
uses addresses of its own."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import NakamaProcess
from tests.integration.test_web_security import csrf_of
from tests.support import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-pass-333"}
# The proxy's own address towards Nakama (nginx's proxy_bind): the one trusted.
PROXY = "127.0.0.2"

NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{nakama};
      proxy_bind {proxy};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("signin-hardening")
    server = NakamaProcess(
        data_dir=root / "data",
        extra_env={
            "NAKAMA_WEB__TRUSTED_PROXIES": PROXY,
            # Long first wait: no try gets through in the test's time by waiting it out.
            "NAKAMA_WEB__SIGNIN_BACKOFF_INITIAL_S": "120",
        },
    )
    server.start()
    for username, password in PASSWORDS.items():
        r = server.api.post("/api/v1/users", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
    yield server
    server.close()


@pytest.fixture(scope="module")
def nginx(nakama: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's nginx on loopback in front of Nakama; yields its URL."""
    assert Path(NGINX).is_file(), "nginx is missing: apt-get install nginx"
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONFIG.format(tmp=tmp, port=port, nakama=nakama.port, proxy=PROXY))
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                f"nginx did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stderr is not None:
        proc.stderr.close()


def client(url: str, source: str, **kwargs: object) -> httpx.Client:
    """A browser-like client whose connections come from the loopback address ``source``."""
    return httpx.Client(
        base_url=url,
        timeout=60,
        follow_redirects=False,
        transport=httpx.HTTPTransport(local_address=source),
        **kwargs,  # type: ignore[arg-type]
    )


def sign_in(
    http: httpx.Client, username: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    page = http.get("/login")
    return http.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        headers=headers,
    )


def test_concurrent_guesses_are_checked_at_most_the_limit_and_alice_still_signs_in(
    nakama: NakamaProcess,
) -> None:
    """Review M5 (b) and (c): 200 concurrent wrong guesses for alice from bob's address; the
    old throttle checked 25-30 of them (check and record were apart) and then locked alice
    out everywhere."""
    with client(nakama.url, "127.0.0.3", limits=httpx.Limits(max_connections=100)) as bob:
        token = csrf_of(bob.get("/login").text)

        def guess(i: int) -> int:
            form = {"username": "alice", "password": f"guess-{i:04d}", "csrf_token": token}
            return bob.post("/login", data=form).status_code

        with ThreadPoolExecutor(max_workers=100) as pool:
            statuses = Counter(pool.map(guess, range(200)))
        assert set(statuses) <= {401, 429}, statuses
        assert statuses[401] <= 5, statuses  # checked (scrypt) at most the limit
        assert statuses[429] >= 195
        refused = sign_in(bob, "alice", PASSWORDS["alice"])
        assert refused.status_code == 429  # even the right password: bob's address waits
        assert "Too many failed attempts from your address" in refused.text
        assert 100 <= int(refused.headers["Retry-After"]) <= 120 * 2
    # Alice, from her own address, is not locked out by bob's guesses.
    with client(nakama.url, "127.0.0.4") as alice:
        assert sign_in(alice, "alice", PASSWORDS["alice"]).status_code == 303
        assert alice.get("/projects").status_code == 200


def test_a_forwarded_for_header_from_a_client_is_not_believed(nakama: NakamaProcess) -> None:
    """Review M5 (a): uvicorn's default believes X-Forwarded-For from any loopback peer, so bob
    named a fresh address with each try and the per-address limit (30) never held."""
    with client(nakama.url, "127.0.0.1") as bob:
        statuses = []
        for i in range(31):  # a different user each time: only the per-address limit counts
            spoofed = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            statuses.append(sign_in(bob, f"nobody{i}", "wrong-password", spoofed).status_code)
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429


def test_behind_the_named_proxy_each_client_is_throttled_on_its_own_address(
    nakama: NakamaProcess, nginx: str
) -> None:
    """Through nginx (trusted, NAKAMA_WEB__TRUSTED_PROXIES): the address nginx names counts,
    and what bob writes into X-Forwarded-For himself does not."""
    with client(nginx, "127.0.0.6") as bob:
        for i in range(5):
            spoofed = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            assert sign_in(bob, "carol", f"wrong-{i}", spoofed).status_code == 401
        assert sign_in(bob, "carol", "wrong-5", {"X-Forwarded-For": "203.0.113.99"}).status_code
        assert sign_in(bob, "carol", PASSWORDS["carol"]).status_code == 429
    # Carol reaches Nakama through the same nginx, from her own address: not held back. If
    # the proxy's header were not believed, both would be 127.0.0.2 and she would wait.
    with client(nginx, "127.0.0.7") as carol:
        assert sign_in(carol, "carol", PASSWORDS["carol"]).status_code == 303


def _basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"git:{token}".encode()).decode()}


def test_wrong_tokens_from_one_address_get_429_on_the_api_and_git(nakama: NakamaProcess) -> None:
    """Review L5: 300 wrong bearer tokens in a row all got 401, never 429."""
    bob_token = nakama.api.post("/api/v1/users/bob/tokens").json()["token"]
    alice_token = nakama.api.post("/api/v1/users/alice/tokens").json()["token"]
    with client(nakama.url, "127.0.0.9") as bob:
        for _ in range(20):
            wrong = {"Authorization": f"Bearer nkm_{secrets.token_urlsafe(32)}"}
            assert bob.get("/api/v1/projects", headers=wrong).status_code == 401
        r = bob.get("/api/v1/projects", headers={"Authorization": "Bearer nkm_guess"})
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 240
        assert "NAKAMA_WEB__TOKEN_FAILURES_PER_ADDRESS" in r.json()["detail"]
        # While it waits nothing is checked, a right token neither: guessing learns nothing.
        mine = {"Authorization": f"Bearer {bob_token}"}
        assert bob.get("/api/v1/projects", headers=mine).status_code == 429
        # git's basic auth shares the count.
        git = bob.get("/git/x.git/info/refs?service=git-upload-pack", headers=_basic(bob_token))
        assert git.status_code == 429 and "retry-after" in git.headers
    # Wrong tokens through git count for the API too.
    with client(nakama.url, "127.0.0.10") as mallory:
        for _ in range(20):
            r = mallory.get("/git/x.git/info/refs?service=git-upload-pack", headers=_basic("bad"))
            assert r.status_code == 401
        assert mallory.get("/git/x.git/info/refs?service=git-upload-pack").status_code == 401
        mine = {"Authorization": f"Bearer {bob_token}"}
        assert mallory.get("/api/v1/projects", headers=mine).status_code == 429
    # Alice, elsewhere, is not affected.
    with client(nakama.url, "127.0.0.11") as alice:
        r = alice.get("/api/v1/projects", headers={"Authorization": f"Bearer {alice_token}"})
        assert r.status_code == 200
    for secret in (bob_token, alice_token):
        assert secret not in nakama.log()
