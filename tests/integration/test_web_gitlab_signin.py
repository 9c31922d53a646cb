"""Sign in with GitLab, against a real cluster-mode ``create_app`` served by uvicorn on loopback
and the GitLab fake's OAuth provider (:mod:`tests.fakes.gitlab_oauth`), with an httpx client
that follows redirects as a browser does.

The first sign-in makes a local user linked to the GitLab username, the next ones reuse it; a
project made from the web form gets its GitLab user as the repository's Maintainer. Denied
consent, a wrong state, a wrong client secret, a blocked user and GitLab going down each end on
the sign-in page with a clear message and no session; the client secret, the code and GitLab's
tokens appear in no page, no session cookie and no log line of the server."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import select

from backend.app import Platform, build_platform, create_app
from backend.web import gitlab_signin
from nakama.db.tables import Project, User
from nakama.sessions import SessionStore
from nakama.settings import (
    FluxSettings,
    GitLabSettings,
    HarborSettings,
    Settings,
    WebSettings,
)
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.gitlab_oauth import OAuthApplication
from tests.fakes.kubernetes import kube_fake, kubeconfig
from tests.support import free_port, serve, sse_events

__all__ = ["kube_fake", "kubeconfig"]  # the fixtures

ADMIN = "nkm_gitlab-signin-admin-token-0123456789"
GITOPS = "nakama/gitops"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# --- fixtures -----------------------------------------------------------------------------------
@dataclass
class Logs:
    """What the server logged: structlog events and stdlib records from its threads."""

    events: list[dict[str, Any]]
    caplog: pytest.LogCaptureFixture

    def text(self) -> str:
        records = self.caplog.get_records("setup") + self.caplog.get_records("call")
        server = [r for r in records if r.threadName != threading.main_thread().name]
        return repr(self.events) + "\n".join(
            f"{r.name} {r.getMessage()} {r.args!r}" for r in server
        )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    # DEBUG: authlib and httpx say most there. The test's own browser (main thread) is left out.
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield Logs(events, caplog)


@dataclass
class Nakama:
    url: str
    platform: Platform

    def user(self, gitlab_username: str) -> User | None:
        with self.platform.db.session() as s:
            return s.scalar(select(User).where(User.gitlab_username == gitlab_username))

    @property
    def sessions(self) -> SessionStore:
        return SessionStore(self.platform.db, self.platform.tokens, max_age_s=3600)

    def users(self) -> list[str]:
        with self.platform.db.session() as s:
            return sorted(s.scalars(select(User.username)).all())


@contextmanager
def nakama_server(
    tmp_path: Path,
    *,
    gitlab_url: str,
    port: int,
    client_id: str | None,
    client_secret: str | None,
    mode: str = "cluster",
) -> Iterator[Nakama]:
    settings = Settings(
        mode=mode,  # type: ignore[arg-type]
        data_dir=tmp_path / f"nakama-{port}",
        public_url=f"http://127.0.0.1:{port}",
        admin_token=SecretStr(ADMIN),
        gitlab=GitLabSettings(
            url=gitlab_url,
            token=SecretStr(TOKEN),
            trigger_token=SecretStr(TRIGGER_TOKEN),
            max_attempts=1,
            timeout_s=5.0,
        ),
        harbor=HarborSettings(url="http://127.0.0.1:9"),  # not asked while signing in
        flux=FluxSettings(app_domain="apps.test", gitops_project=GITOPS),
        web=WebSettings(
            gitlab_oauth_client_id=client_id,
            gitlab_oauth_client_secret=SecretStr(client_secret) if client_secret else None,
        ),
    )
    platform = build_platform(settings)
    platform.bootstrap_admin()
    with serve(create_app(platform), port=port) as url:
        yield Nakama(url, platform)


@dataclass
class Setup:
    nakama: Nakama
    app: OAuthApplication


@contextmanager
def signin_setup(
    gitlab: GitLabFake, tmp_path: Path, *, secret: str | None = None
) -> Iterator[Setup]:
    """Nakama with a GitLab OAuth application registered for its callback (and ``secret``
    configured instead of the real one, if given)."""
    port = free_port()
    app = gitlab.oauth.add_application(
        redirect_uri=f"http://127.0.0.1:{port}/login/gitlab/callback"
    )
    with nakama_server(
        tmp_path,
        gitlab_url=gitlab.url,
        port=port,
        client_id=app.client_id,
        client_secret=secret or app.client_secret,
    ) as nakama:
        yield Setup(nakama, app)


@pytest.fixture
def setup(gitlab_fake: GitLabFake, kubeconfig: Path, tmp_path: Path) -> Iterator[Setup]:
    gitlab_fake.add_user("jsmith", name="Jane Smith")
    gitlab_fake.oauth.sign_in("jsmith")
    with signin_setup(gitlab_fake, tmp_path) as ready:
        yield ready


@contextmanager
def browser(base_url: str) -> Iterator[httpx.Client]:
    """A client with a cookie jar that follows redirects, as a browser does."""
    with httpx.Client(base_url=base_url, timeout=30, follow_redirects=True) as client:
        yield client


def session_of(client: httpx.Client) -> dict[str, Any]:
    """The Nakama session cookie's content (signed, not encrypted: readable by its holder)."""
    cookie = client.cookies.get("nakama_session")
    if cookie is None:
        return {}
    payload = cookie.split(".", 1)[0]
    decoded: dict[str, Any] = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def signed_out(client: httpx.Client) -> bool:
    r = client.get("/projects", follow_redirects=False)
    return r.status_code == 303 and r.headers["location"].startswith("/login")


def assert_nothing_leaks(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def gitlab_secrets(gitlab: GitLabFake, app: OAuthApplication) -> list[str]:
    """The client secret, every code and every token GitLab issued."""
    found = [app.client_secret, *gitlab.oauth.grants]
    for token in gitlab.oauth.tokens.values():
        found += [token.access_token, token.refresh_token]
    return found


def callback_url(client: httpx.Client) -> str:
    """Start a sign-in and return where GitLab sends the browser back, without going there."""
    to_gitlab = client.get("/login/gitlab?next=/projects", follow_redirects=False)
    assert to_gitlab.status_code == 302
    back = client.get(to_gitlab.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    return str(back.headers["location"])


# --- the login page -----------------------------------------------------------------------------
def test_login_page_offers_gitlab_only_when_configured(
    setup: Setup, gitlab_fake: GitLabFake, tmp_path: Path
) -> None:
    with browser(setup.nakama.url) as client:
        page = client.get("/login?next=/projects/demo")
        assert page.status_code == 200
        assert "Sign in with GitLab" in page.text
        assert 'href="/login/gitlab?next=/projects/demo"' in page.text
        assert setup.app.client_secret not in page.text

    # Cluster mode without the OAuth settings, and local mode even with them: no button.
    for mode, client_id, secret in (
        ("cluster", None, None),
        ("cluster", setup.app.client_id, None),
        ("local", setup.app.client_id, setup.app.client_secret),
    ):
        with (
            nakama_server(
                tmp_path / mode,
                gitlab_url=gitlab_fake.url,
                port=free_port(),
                client_id=client_id,
                client_secret=secret,
                mode=mode,
            ) as other,
            browser(other.url) as client,
        ):
            page = client.get("/login")
            assert page.status_code == 200
            assert "Sign in with GitLab" not in page.text
            assert client.get("/login/gitlab", follow_redirects=False).status_code == 404


# --- signing in ---------------------------------------------------------------------------------
def test_sign_in_creates_a_linked_user_and_signing_in_again_reuses_it(
    setup: Setup, gitlab_fake: GitLabFake, logs: Logs
) -> None:
    nakama, app = setup.nakama, setup.app
    with browser(nakama.url) as client:
        page = client.get("/login/gitlab", params={"next": "/projects?from=gitlab"})
        assert page.status_code == 200, page.text
        assert [r.status_code for r in page.history] == [302, 302, 303]
        assert page.url.path == "/projects" and page.url.query == b"from=gitlab"
        assert 'data-testid="signed-in-as">jsmith</a>' in page.text
        session = session_of(client)
        assert set(session) == {"sid", "csrf"}  # nothing of GitLab's token
        signed_in = nakama.sessions.principal(session["sid"])

    # What Nakama asked GitLab for: the code flow with PKCE (S256), read_user only.
    [asked] = gitlab_fake.oauth.authorize_requests
    assert asked["client_id"] == app.client_id
    assert asked["response_type"] == "code"
    assert asked["scope"] == "read_user"
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["redirect_uri"] == f"{nakama.url}/login/gitlab/callback"
    [exchange] = gitlab_fake.oauth.token_requests
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["client_auth"] == "basic" and exchange["code_given"] == "True"
    assert exchange["code_verifier"]

    user = nakama.user("jsmith")
    assert user is not None
    assert signed_in is not None and signed_in.user_id == user.id
    assert (user.username, user.is_admin) == ("jsmith", False)
    assert user.password_hash is None  # signs in through GitLab only

    # Again, from another browser: the same user (and no way off this site after it).
    with browser(nakama.url) as client:
        page = client.get("/login/gitlab", params={"next": "//evil.example/x"})
        assert page.status_code == 200 and page.url.path == "/projects"
        again = nakama.sessions.principal(session_of(client)["sid"])
        assert again is not None and again.user_id == user.id
    assert nakama.users() == ["admin", "jsmith"]
    assert nakama.platform.tokens.gitlab_username_of(user.id) == "jsmith"

    assert "POST http://127.0.0.1" in logs.text()  # the server's token request is in the logs
    assert_nothing_leaks([logs.text()], gitlab_secrets(gitlab_fake, app))
    assert any(e["event"] == "signed in with GitLab" for e in logs.events)


def test_a_gitlab_name_that_is_taken_or_not_ours_gets_a_free_local_username(
    setup: Setup, gitlab_fake: GitLabFake
) -> None:
    nakama = setup.nakama
    nakama.platform.tokens.create_user("mallory", "mallory-password-1")
    for username in ("Mallory", "J.Doe", "admin"):
        gitlab_fake.add_user(username)
        gitlab_fake.oauth.sign_in(username)
        with browser(nakama.url) as client:
            assert client.get("/login/gitlab").url.path == "/projects"
    linked = {name: nakama.user(name) for name in ("Mallory", "J.Doe", "admin")}
    assert {name: u.username for name, u in linked.items() if u} == {
        "Mallory": "mallory-2",
        "J.Doe": "j-doe",
        "admin": "admin-2",
    }
    assert not any(u.is_admin for u in linked.values() if u)
    assert nakama.platform.tokens.gitlab_username_of(1) is None  # the local admin: no link


def test_a_project_made_from_the_web_has_the_gitlab_user_as_maintainer(
    setup: Setup, gitlab_fake: GitLabFake
) -> None:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    with browser(setup.nakama.url) as client:
        assert client.get("/login/gitlab").url.path == "/projects"
        form = client.get("/projects")
        token = _CSRF.search(form.text)
        assert token is not None
        created = client.post(
            "/projects",
            data={"name": "demo", "csrf_token": token.group(1)},
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/projects/demo"
        assert client.get("/projects/demo").status_code == 200
    assert gitlab_fake.members("demo")["jsmith"] == 40  # Maintainer, never Owner
    user = setup.nakama.user("jsmith")
    assert user is not None
    with setup.nakama.platform.db.session() as s:
        owner = s.scalar(select(Project.owner_id).where(Project.name == "demo"))
    assert owner == user.id


def test_sharing_keeps_gitlab_access_levels_in_step_with_roles(
    setup: Setup, gitlab_fake: GitLabFake
) -> None:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    gitlab_fake.add_user("rdoe", name="Rita Doe")
    with browser(setup.nakama.url) as client:  # jsmith signs in and makes the project
        assert client.get("/login/gitlab").url.path == "/projects"
        token = _CSRF.search(client.get("/projects").text)
        assert token is not None
        r = client.post("/projects", data={"name": "demo", "csrf_token": token.group(1)})
        assert r.status_code == 200, r.text
    gitlab_fake.oauth.sign_in("rdoe")
    with browser(setup.nakama.url) as client:  # rdoe signs in once: a linked local user
        assert client.get("/login/gitlab").url.path == "/projects"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    api = httpx.Client(base_url=setup.nakama.url, headers=admin, timeout=30)
    members = "/api/v1/projects/demo/members/rdoe"
    assert api.put(members, json={"role": "developer"}).status_code == 200
    assert gitlab_fake.members("demo")["rdoe"] == 30  # Developer
    assert api.put(members, json={"role": "owner"}).status_code == 200
    assert gitlab_fake.members("demo")["rdoe"] == 40  # Maintainer, never Owner
    assert api.put(members, json={"role": "viewer"}).status_code == 200
    assert "rdoe" not in gitlab_fake.members("demo")  # viewers only open the app
    assert api.delete(members).status_code == 204
    assert "rdoe" not in gitlab_fake.members("demo")
    assert gitlab_fake.members("demo")["jsmith"] == 40
    api.close()


# --- failures -----------------------------------------------------------------------------------
def test_denied_consent_shows_why_and_signs_nobody_in(
    setup: Setup, gitlab_fake: GitLabFake, logs: Logs
) -> None:
    gitlab_fake.oauth.deny = True
    with browser(setup.nakama.url) as client:
        page = client.get("/login/gitlab", params={"next": "/projects/demo"})
        assert page.status_code == 401
        assert gitlab_signin.DENIED in page.text
        assert 'name="next" value="/projects/demo"' in page.text  # the next try goes there
        assert signed_out(client)
        assert "sid" not in session_of(client)
    assert gitlab_fake.oauth.token_requests == []
    assert setup.nakama.user("jsmith") is None
    assert_nothing_leaks([page.text, logs.text()], gitlab_secrets(gitlab_fake, setup.app))


def test_a_wrong_or_foreign_state_is_refused(
    setup: Setup, gitlab_fake: GitLabFake, logs: Logs
) -> None:
    pages = []
    with browser(setup.nakama.url) as victim, browser(setup.nakama.url) as attacker:
        back = urlsplit(callback_url(victim))
        query = {k: v[0] for k, v in parse_qs(back.query).items()}
        tampered = {**query, "state": query["state"][:-2] + "xx"}
        page = victim.get(f"{back.path}?{urlencode(tampered)}")
        assert page.status_code == 400
        assert gitlab_signin.STATE_MISMATCH in page.text
        pages.append(page.text)
        assert signed_out(victim)

        # Someone else's callback (login CSRF): this browser never started that sign-in.
        foreign = urlsplit(callback_url(attacker))
        page = victim.get(f"{foreign.path}?{foreign.query}")
        assert page.status_code == 400
        assert gitlab_signin.STATE_MISMATCH in page.text
        pages.append(page.text)
        assert signed_out(victim)
    assert gitlab_fake.oauth.token_requests == []  # no code was sent to GitLab
    assert setup.nakama.user("jsmith") is None
    assert_nothing_leaks([*pages, logs.text()], gitlab_secrets(gitlab_fake, setup.app))


def test_a_wrong_client_secret_is_refused_by_gitlab(
    gitlab_fake: GitLabFake, kubeconfig: Path, tmp_path: Path, logs: Logs
) -> None:
    gitlab_fake.add_user("jsmith")
    gitlab_fake.oauth.sign_in("jsmith")
    wrong = "gloas-not-the-secret-0123456789abcdef"
    with signin_setup(gitlab_fake, tmp_path, secret=wrong) as ready:
        with browser(ready.nakama.url) as client:
            page = client.get("/login/gitlab")
            assert page.status_code == 401
            assert gitlab_signin.REFUSED in page.text
            assert signed_out(client)
        [exchange] = gitlab_fake.oauth.token_requests
        assert exchange["grant_type"] == "authorization_code"
        assert gitlab_fake.oauth.tokens == {}  # GitLab issued nothing
        assert ready.nakama.user("jsmith") is None
        secrets = [wrong, *gitlab_secrets(gitlab_fake, ready.app)]
        assert_nothing_leaks([page.text, logs.text()], secrets)
    assert any(
        e["event"] == "GitLab sign-in failed" and e["reason"] == "token refused: invalid_client"
        for e in logs.events
    )


def test_a_blocked_gitlab_user_cannot_sign_in(
    setup: Setup, gitlab_fake: GitLabFake, logs: Logs
) -> None:
    with browser(setup.nakama.url) as client:
        back = callback_url(client)
        # Blocked by a GitLab admin after approving: the token no longer reads the account.
        next(u for u in gitlab_fake.users.values() if u.username == "jsmith").state = "blocked"
        page = client.get(back)
        assert page.status_code == 401
        assert gitlab_signin.NOT_ACTIVE in page.text
        assert signed_out(client)
    assert len(gitlab_fake.oauth.tokens) == 1
    assert setup.nakama.user("jsmith") is None
    assert_nothing_leaks([page.text, logs.text()], gitlab_secrets(gitlab_fake, setup.app))


def test_gitlab_going_down_during_sign_in_is_a_503(
    kubeconfig: Path, tmp_path: Path, logs: Logs
) -> None:
    gitlab = GitLabFake(tmp_path / "gitlab-fake")
    serving = gitlab.serving()
    serving.__enter__()
    up = True
    try:
        gitlab.add_user("jsmith")
        gitlab.oauth.sign_in("jsmith")
        with signin_setup(gitlab, tmp_path) as ready, browser(ready.nakama.url) as client:
            back = callback_url(client)
            serving.__exit__(None, None, None)  # GitLab goes down; its port is closed now
            up = False
            with pytest.raises(httpx.ConnectError):
                httpx.get(gitlab.url, timeout=5)
            page = client.get(back)
            assert page.status_code == 503
            assert gitlab_signin.UNREACHABLE in page.text
            assert signed_out(client)
            assert ready.nakama.user("jsmith") is None
            secrets = gitlab_secrets(gitlab, ready.app)
            assert_nothing_leaks([page.text, logs.text()], secrets)
    finally:
        if up:
            serving.__exit__(None, None, None)
    assert any(
        e["event"] == "GitLab sign-in failed" and e["reason"] == "ConnectError" for e in logs.events
    )


# --- the pages in cluster mode ------------------------------------------------------------------
def test_a_projects_page_shows_its_gitlab_pipelines_and_streams_their_log(
    setup: Setup, gitlab_fake: GitLabFake
) -> None:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    with browser(setup.nakama.url) as client:
        assert client.get("/login/gitlab").url.path == "/projects"
        token = _CSRF.search(client.get("/projects").text)
        assert token is not None
        created = client.post("/projects", data={"name": "shop", "csrf_token": token.group(1)})
        assert created.url.path == "/projects/shop"
        [triggered] = gitlab_fake.triggered()
        gitlab_fake.set_pipeline_status(triggered.id, "running", trace="building the image\n")

        page = client.get("/projects/shop")
        assert page.status_code == 200
        assert f"{gitlab_fake.url}/" in page.text and "shop.git" in page.text  # GitLab's clone URL
        assert "Image tag" in page.text  # cluster mode: an image, not a local environment
        assert 'data-pipeline="1" data-status="running"' in page.text
        assert "https://shop.apps.test" in page.text

        with client.stream("GET", "/projects/shop/pipelines/1/log/events") as stream:
            events = (event for event, _ in sse_events(stream))
            first = next(events)
            assert first["event"] == "log"
            assert json.loads(first["data"])["text"] == "building the image\n"
            # GitLab's job goes on, then fails: the stream sends what was added, then the end.
            gitlab_fake.set_pipeline_status(
                triggered.id, "failed", trace="building the image\nno space left\n"
            )
            rest = list(events)
        assert [e["event"] for e in rest] == ["log", "end"]
        assert json.loads(rest[0]["data"])["text"] == "no space left\n"
        assert json.loads(rest[1]["data"])["status"] == "failed"
        failed = client.get("/projects/shop/pipelines/1")
        assert failed.status_code == 200
        assert "GitLab pipeline" in failed.text  # why it failed, with GitLab's pipeline
