"""The OCI client and ``nakama build`` against docker-registry behind a Docker token service, the
way Harbor's registry authenticates: ``401`` with ``WWW-Authenticate: Bearer realm=…,
service=…,scope=…``, a token from the realm for the scopes asked (Basic credentials there),
``401 error="insufficient_scope"`` when a token grants less than a request needs.

Three robots, as ``nakama cluster setup`` makes them plus one of another team: the push robot
of ``nakama-apps`` (and pull on the public ``nakama`` project, where the base image lives), its
pull robot, and the push robot of ``team-b``, which must see nothing of ``nakama-apps``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from image_builder.build import build_main
from nakama.clients.harbor import robot_file
from nakama.clients.oci import OCI_MANIFEST, Manifest, OciClient
from nakama.errors import NotFound, PermanentError, Unauthorized
from tests.integration.test_build_cli import Repo
from tests.registry import (
    Grant,
    Registry,
    TokenService,
    pull_rootfs,
    push_rootfs_image,
    python_rootfs,
    token_registry_server,
)

PUSH = "robot$nakama-apps+push"
PULL = "robot$nakama-apps+pull"
OTHER = "robot$team-b+push"
ADMIN = "admin"
SECRETS = {PUSH: "Push-s3cret-1", PULL: "Pull-s3cret-2", OTHER: "Other-s3cret-3", ADMIN: "Adm1n"}
ALL = {"pull", "push", "delete"}


@pytest.fixture(scope="module")
def tokens() -> TokenService:
    return TokenService(
        users={
            PUSH: Grant(SECRETS[PUSH], {"nakama-apps/*": {"pull", "push"}, "nakama/*": {"pull"}}),
            PULL: Grant(SECRETS[PULL], {"nakama-apps/*": {"pull"}}),
            OTHER: Grant(SECRETS[OTHER], {"team-b/*": {"pull", "push"}}),
            ADMIN: Grant(SECRETS[ADMIN], {"*": ALL}),
        }
    )


@pytest.fixture(scope="module")
def registry(tokens: TokenService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with token_registry_server(tmp_path_factory.mktemp("registry"), tokens) as reg:
        yield reg


@pytest.fixture(autouse=True)
def _fresh_log(tokens: TokenService) -> None:
    tokens.requests.clear()


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def norm(scope: str) -> str:
    """A scope with its actions sorted: distribution lists them in map order, which varies."""
    head, _, actions = scope.rpartition(":")
    return f"{head}:{','.join(sorted(actions.split(',')))}"


def client(registry: Registry, user: str, password: str | None = None) -> OciClient:
    return OciClient(registry.url, username=user, password=password or SECRETS[user])


def test_the_registry_challenges_with_realm_service_and_scope(
    registry: Registry, tokens: TokenService
) -> None:
    answer = httpx.get(f"{registry.url}/v2/nakama-apps/demo/tags/list")
    assert answer.status_code == 401
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm=")
    assert f'service="{tokens.service}"' in challenge
    assert 'scope="repository:nakama-apps/demo:pull"' in challenge


def test_push_then_pull_with_tokens_and_a_re_challenge_for_push(
    registry: Registry, tokens: TokenService
) -> None:
    layer, config = b"layer bytes\n", b'{"config":{"Labels":{"k":"v"}},"rootfs":{"diff_ids":[]}}'
    with client(registry, PUSH) as push:
        with pytest.raises(NotFound):
            push.list_tags("nakama-apps/tokens")  # a pull token: nothing there yet
        assert push.push_blob("nakama-apps/tokens", layer, digest=_sha256(layer))
        assert push.push_blob("nakama-apps/tokens", config, digest=_sha256(config))
        assert not push.push_blob("nakama-apps/tokens", layer, digest=_sha256(layer))  # there
        manifest = _manifest(config, layer)
        push.put_manifest("nakama-apps/tokens", "v1", manifest)
    # The pull token the first call got was refused for the upload: the client followed the
    # registry's new challenge and came back with pull,push for the same repository.
    scopes = [[norm(scope) for scope in r.scopes] for r in tokens.requests]
    assert scopes[0] == ["repository:nakama-apps/tokens:pull"]
    assert ["repository:nakama-apps/tokens:pull,push"] in scopes
    assert all(r.user == PUSH for r in tokens.requests)
    with client(registry, PULL) as pull:
        assert pull.list_tags("nakama-apps/tokens") == ["v1"]
        assert pull.image_labels("nakama-apps/tokens", "v1") == {"k": "v"}


def test_a_wider_scope_than_granted_is_insufficient_scope(registry: Registry) -> None:
    with client(registry, PULL) as pull, pytest.raises(Unauthorized) as refused:
        pull.push_blob("nakama-apps/tokens", b"x", digest=_sha256(b"x"))
    message = str(refused.value)
    assert "insufficient_scope: these credentials do not grant repository:nakama-apps/tokens:" in (
        message
    )
    assert norm(message.rsplit(" ", 1)[-1].rstrip(")")) == "repository:nakama-apps/tokens:pull,push"
    assert SECRETS[PULL] not in str(refused.value)


def test_another_teams_robot_sees_and_changes_nothing_of_the_apps(
    registry: Registry, tokens: TokenService
) -> None:
    body = b"team-b's layer\n"
    with client(registry, OTHER) as other:
        with pytest.raises(Unauthorized, match="insufficient_scope"):
            other.list_tags("nakama-apps/tokens")
        with pytest.raises(Unauthorized, match="insufficient_scope"):
            other.push_blob("nakama-apps/tokens", body, digest=_sha256(body))
        assert other.push_blob("team-b/own", body, digest=_sha256(body))  # its own project
    # Every token it got granted nothing on nakama-apps.
    for request in tokens.requests:
        for access in request.granted:
            if str(access["name"]).startswith("nakama-apps/"):
                assert access["actions"] == []
    with client(registry, PULL) as pull:
        assert pull.blob_size("nakama-apps/tokens", _sha256(body)) is None


def test_wrong_password_at_the_token_service_is_unauthorized_without_echo(
    registry: Registry,
) -> None:
    with client(registry, PUSH, "not-the-secret") as wrong, pytest.raises(Unauthorized) as bad:
        wrong.list_tags("nakama-apps/tokens")
    assert "not-the-secret" not in str(bad.value)


def test_a_layer_build_mounts_the_base_with_one_token_for_both_repositories(
    registry: Registry, tokens: TokenService, tmp_path: Path
) -> None:
    """``nakama build`` as the push robot, from its robot file: the base image in the public
    ``nakama`` project is mounted into the app's repository, which needs a token for the push
    and for the pull of the source at once (distribution puts both scopes in one challenge,
    space-separated; the client asks for them as two scope parameters)."""
    rootfs = tmp_path / "base"
    rootfs.mkdir()
    env = python_rootfs(rootfs, python=os.path.realpath(sys.executable))
    push_rootfs_image(registry, "nakama/python", "3.11-slim", rootfs, env=env,
                      credentials=(ADMIN, SECRETS[ADMIN]))  # fmt: skip
    repo = Repo(tmp_path / "app")
    sha = repo.commit({"app.py": "\n"})
    # The File variable as `nakama cluster setup --push-robot-file` writes it, and the user name
    # variable as GitLab hands it over when it is not raw: the file's name is the one used.
    password = tmp_path / "password"
    password.write_text(robot_file(PUSH, SECRETS[PUSH]))
    tokens.requests.clear()
    out = io.StringIO()
    code = build_main(
        [
            "--repo", str(repo.bare), "--commit", sha,
            "--image", f"{registry.host}/nakama-apps/mounted",
            "--registry-username", "robot-apps+push", "--registry-password-file", str(password),
            "--no-tls-verify", "--base-image", f"{registry.host}/nakama/python:3.11-slim",
        ],
        out=out,
    )  # fmt: skip
    assert code == 0, out.getvalue()
    assert "base layers: 1 mounted, 0 copied" in out.getvalue()
    both = sorted(["repository:nakama-apps/mounted:pull,push", "repository:nakama/python:pull"])
    assert both in [sorted(norm(scope) for scope in r.scopes) for r in tokens.requests]
    assert SECRETS[PUSH] not in out.getvalue()
    assert {r.user for r in tokens.requests} == {PUSH}
    with client(registry, PULL) as pull:
        [tag] = pull.list_tags("nakama-apps/mounted")
    pulled = pull_rootfs(registry, "nakama-apps/mounted", tag, tmp_path / "rootfs",
                         credentials=(PULL, SECRETS[PULL]))  # fmt: skip
    assert (tmp_path / "rootfs" / "opt" / "nakama" / "venv" / "pyvenv.cfg").is_file()
    assert len(pulled.layer_digests) == 2


def _manifest(config: bytes, layer: bytes) -> Manifest:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return Manifest(media_type=OCI_MANIFEST, digest=_sha256(body), content=body)


def test_a_large_blob_goes_in_chunks_and_arrives_whole(registry: Registry, tmp_path: Path) -> None:
    """Above the client's chunk size a blob is sent as PATCH chunks with Content-Range, then a
    closing PUT with the digest; the registry checks the digest, the pull checks it again."""
    data = os.urandom(10_000) + b"tail"
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    with OciClient(registry.url, username=PUSH, password=SECRETS[PUSH], chunk_bytes=4096) as push:
        assert push.push_blob("nakama-apps/chunks", blob, digest=_sha256(data))
        assert push.blob_size("nakama-apps/chunks", _sha256(data)) == len(data)
    with client(registry, PULL) as pull:
        target = tmp_path / "back"
        assert pull.download_blob("nakama-apps/chunks", _sha256(data), target) == len(data)
    assert target.read_bytes() == data
    # A blob whose digest is not its content's is refused by the registry, not stored.
    with (
        OciClient(registry.url, username=PUSH, password=SECRETS[PUSH], chunk_bytes=4096) as push,
        pytest.raises(PermanentError, match="DIGEST_INVALID"),
    ):
        push.push_blob("nakama-apps/chunks", blob, digest=_sha256(b"something else"))
