"""nakama.clients.oci against a real registry (docker-registry), with and without Basic auth, and
behind a loopback front that speaks Harbor's Bearer token flow and paginates tag lists."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nakama.clients.oci import OCI_INDEX, OCI_MANIFEST, OciClient
from nakama.errors import InvalidInput, NotFound, TemporaryError, Unauthorized
from tests.registry import (
    PASSWORD,
    USERNAME,
    Registry,
    push_test_image,
    push_test_index,
    registry_server,
)
from tests.support import free_port, serve

REPO = "nakama-apps/demo"
LABEL = "dev.nakama.dependency-hash"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_server(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def images(registry: Registry) -> dict[str, str]:
    """Five tags of REPO; returns tag -> manifest digest."""
    labels = {
        "main-00000001-20260101000001": "aaaa",
        "main-00000002-20260101000002": "bbbb",
        "main-00000003-20260101000003": "aaaa",
        "main-00000004-20260101000004": "cccc",
        "latest": "cccc",
    }
    return {
        tag: push_test_image(registry, REPO, tag, labels={LABEL: value, "tag": tag})[0]
        for tag, value in labels.items()
    }


def test_list_tags_manifest_labels(registry: Registry, images: dict[str, str]) -> None:
    with OciClient(registry.url) as client:
        client.ping()
        assert sorted(client.list_tags(REPO)) == sorted(images)
        manifest = client.fetch_manifest(REPO, "latest")
        assert manifest.media_type == OCI_MANIFEST
        assert manifest.digest == images["latest"]
        assert client.get_manifest(REPO, images["latest"])["config"]["digest"].startswith("sha256:")
        labels = client.image_labels(REPO, "main-00000002-20260101000002")
        assert labels == {LABEL: "bbbb", "tag": "main-00000002-20260101000002"}


def test_find_by_label_takes_the_first_match_and_skips_vanished_tags(
    registry: Registry, images: dict[str, str]
) -> None:
    newest_first = sorted((t for t in images if t.startswith("main-")), reverse=True)
    with OciClient(registry.url) as client:
        found = client.find_by_label(REPO, LABEL, "aaaa", newest_first_tags=newest_first)
        assert found == "main-00000003-20260101000003"
        gone = ["main-99999999-20990101000000", *newest_first]
        assert client.find_by_label(REPO, LABEL, "bbbb", newest_first_tags=gone) == (
            "main-00000002-20260101000002"
        )
        assert client.find_by_label(REPO, LABEL, "zzzz", newest_first_tags=newest_first) is None


def test_missing_tag_and_repository_are_not_found(registry: Registry, images: object) -> None:
    with OciClient(registry.url) as client:
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.get_manifest(REPO, "no-such-tag")
        with pytest.raises(NotFound, match="NAME_UNKNOWN"):
            client.list_tags("nakama-apps/never-pushed")
        with pytest.raises(InvalidInput):
            client.get_manifest("Bad/Name", "latest")
        with pytest.raises(InvalidInput):
            client.get_manifest(REPO, "../etc")


def test_tag_copies_the_manifest_byte_for_byte(registry: Registry, images: dict[str, str]) -> None:
    with OciClient(registry.url) as client:
        digest = client.tag(REPO, "main-00000001-20260101000001", "main-00000005-20260101000005")
        assert digest == images["main-00000001-20260101000001"]
        assert client.fetch_manifest(REPO, "main-00000005-20260101000005").digest == digest
        assert client.image_labels(REPO, "main-00000005-20260101000005")[LABEL] == "aaaa"


def test_an_index_resolves_to_its_linux_amd64_image(registry: Registry) -> None:
    repo = "nakama-apps/multi"
    arm_digest, _ = push_test_image(registry, repo, "arm", labels={LABEL: "arm"})
    amd_digest, _ = push_test_image(registry, repo, "amd", labels={LABEL: "amd"})
    sizes = {d: len(httpx.get(f"{registry.url}/v2/{repo}/manifests/{d}",
                              headers={"Accept": OCI_MANIFEST}).content)
             for d in (arm_digest, amd_digest)}  # fmt: skip
    push_test_index(registry, repo, "multi", manifests=[
        {"digest": arm_digest, "size": sizes[arm_digest],
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": amd_digest, "size": sizes[amd_digest],
         "platform": {"os": "linux", "architecture": "amd64"}},
    ])  # fmt: skip
    with OciClient(registry.url) as client:
        assert client.fetch_manifest(repo, "multi").media_type == OCI_INDEX
        assert client.image_labels(repo, "multi") == {LABEL: "amd"}


# --- Basic auth (docker-registry's htpasswd) -----------------------------------------------
@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_server(tmp_path_factory.mktemp("auth-registry"), with_auth=True) as reg:
        push_test_image(reg, REPO, "v1", labels={LABEL: "x"})
        yield reg


def test_basic_auth(auth_registry: Registry) -> None:
    with OciClient(auth_registry.url, username=USERNAME, password=PASSWORD) as client:
        assert client.list_tags(REPO) == ["v1"]
        assert client.image_labels(REPO, "v1") == {LABEL: "x"}


@pytest.mark.parametrize("password", [None, "wrong-password-123"])
def test_refused_credentials_are_unauthorized_and_never_echoed(
    auth_registry: Registry, password: str | None
) -> None:
    client = OciClient(auth_registry.url, username=USERNAME, password=password)
    with client, pytest.raises(Unauthorized, match="401") as info:
        client.list_tags(REPO)
    assert PASSWORD not in str(info.value)
    if password:
        assert password not in str(info.value)


def test_unreachable_registry_is_temporary() -> None:
    client = OciClient(f"http://127.0.0.1:{free_port()}", max_attempts=2, backoff_s=0)
    with client, pytest.raises(TemporaryError, match="ConnectError"):
        client.list_tags(REPO)


def test_registry_url_must_not_carry_credentials() -> None:
    with pytest.raises(InvalidInput):
        OciClient("https://user:secret@registry.example.com")


# --- Bearer tokens and pagination (Harbor's way) in front of the real registry -------------
@dataclass
class BearerFront:
    """Asks for Bearer tokens like Harbor, pages tag lists like distribution v3, and forwards
    everything else to the real registry."""

    upstream: str
    base: str = ""
    tokens: dict[str, set[str]] = field(default_factory=dict)  # token -> "repo:action"
    token_requests: list[str] = field(default_factory=list)  # the scopes asked for
    tag_pages: int = 0
    fail_next: int = 0  # answer this many /v2/ requests with 503

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/token", self.token),
            Route("/v2/{path:path}", self.v2, methods=["GET", "HEAD", "PUT"]),
        ])  # fmt: skip

    async def token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return JSONResponse({"errors": [{"code": "UNAUTHORIZED"}]}, status_code=401)
        scope = request.query_params.get("scope", "")
        self.token_requests.append(scope)
        granted = set()
        if scope:
            _, repo, actions = scope.split(":")
            granted = {f"{repo}:{action}" for action in actions.split(",")}
        token = secrets.token_hex(8)
        self.tokens[token] = granted
        return JSONResponse({"token": token, "expires_in": 300})

    async def v2(self, request: Request) -> Response:
        if self.fail_next:
            self.fail_next -= 1
            return JSONResponse({"errors": [{"code": "UNAVAILABLE"}]}, status_code=503)
        path = request.path_params["path"]
        repo = path.split("/tags/")[0].split("/manifests/")[0].split("/blobs/")[0]
        action = "pull" if request.method in ("GET", "HEAD") else "push"
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if path and f"{repo}:{action}" not in self.tokens.get(token, set()):
            actions = "pull" if action == "pull" else "pull,push"
            challenge = (f'Bearer realm="{self.base}/token",service="front",'
                         f'scope="repository:{repo}:{actions}"')  # fmt: skip
            return JSONResponse({"errors": [{"code": "UNAUTHORIZED"}]}, status_code=401,
                                headers={"WWW-Authenticate": challenge})  # fmt: skip
        if path.endswith("/tags/list"):
            return self.tag_page(request, repo)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")
        }
        upstream = httpx.request(request.method, f"{self.upstream}/v2/{path}",
                                 content=await request.body(), headers=headers)  # fmt: skip
        keep = {
            k: v
            for k, v in upstream.headers.items()
            if k in ("content-type", "docker-content-digest")
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=keep)

    def tag_page(self, request: Request, repo: str) -> Response:
        self.tag_pages += 1
        every = sorted(httpx.get(f"{self.upstream}/v2/{repo}/tags/list").json()["tags"])
        n = int(request.query_params.get("n", "1000"))
        last = request.query_params.get("last")
        rest = [t for t in every if last is None or t > last]
        page = rest[:n]
        headers = {}
        if len(rest) > n:
            headers["Link"] = f'</v2/{repo}/tags/list?last={page[-1]}&n={n}>; rel="next"'
        return JSONResponse({"name": repo, "tags": page}, headers=headers)

    def revoke_all(self) -> None:
        self.tokens.clear()


@pytest.fixture
def front(registry: Registry, images: object) -> Iterator[BearerFront]:
    bearer = BearerFront(upstream=registry.url)
    with serve(bearer.app()) as url:
        bearer.base = url
        yield bearer


def test_bearer_token_flow_and_pagination(front: BearerFront, images: dict[str, str]) -> None:
    with OciClient(front.base, username=USERNAME, password=PASSWORD) as client:
        tags = client.list_tags(REPO, page_size=2)
        assert sorted(tags) == sorted(client.list_tags(REPO, page_size=100))
        assert set(images) <= set(tags)
        assert len(tags) == len(set(tags))
        assert front.tag_pages >= 3 + 1  # >= 5 tags in pages of 2, then one page of 100
        assert front.token_requests == [f"repository:{REPO}:pull"]  # the token was reused
        assert client.image_labels(REPO, "latest")[LABEL] == "cccc"

        front.revoke_all()  # an expired token: fetched again, transparently
        client.tag(REPO, "latest", "copied-through-front")
        assert front.token_requests[-1] == f"repository:{REPO}:pull,push"
        assert client.fetch_manifest(REPO, "copied-through-front").digest == images["latest"]


def test_bearer_with_wrong_password_is_unauthorized(front: BearerFront) -> None:
    client = OciClient(front.base, username=USERNAME, password="not-it-at-all")
    with client, pytest.raises(Unauthorized) as info:
        client.list_tags(REPO)
    assert "not-it-at-all" not in str(info.value)


def test_server_errors_are_retried_then_temporary(front: BearerFront) -> None:
    with OciClient(front.base, username=USERNAME, password=PASSWORD, backoff_s=0) as client:
        front.fail_next = 2
        assert "latest" in client.list_tags(REPO)
        front.fail_next = 10
    with OciClient(front.base, max_attempts=3, backoff_s=0) as client:
        with pytest.raises(TemporaryError, match="503"):
            client.ping()
        assert front.fail_next == 7


def test_credentials_go_only_to_a_realm_on_the_registry_or_https(front: BearerFront) -> None:
    elsewhere = front.base.replace("127.0.0.1", "localhost")  # the realm names 127.0.0.1
    client = OciClient(elsewhere, username=USERNAME, password=PASSWORD)
    with client, pytest.raises(Unauthorized):
        client.list_tags(REPO)
    assert front.token_requests == []
