"""``nakama build`` end to end: real git, real buildah (vfs, chroot), a real registry with Basic
auth, and a loopback Flux Receiver. The base image is made here (see tests.registry)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from image_builder.build import build_main
from image_builder.dockerfile import CREATED_LABEL, DEPENDENCY_HASH_LABEL, REVISION_LABEL
from nakama.clients.oci import OciClient
from nakama.errors import NotFound
from nakama.tagging import TAG_PATTERN, dependency_hash
from tests.registry import PASSWORD, USERNAME, Registry, buildah_env, make_base_image
from tests.registry import registry_server as start_registry
from tests.support import serve

BASE_IMAGE = "localhost/nakama-test/python:3.11-slim"
REPO = "nakama-apps/demo"
FLUX_TOKEN = "flux-receiver-token-0123"


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("buildah")
    env = buildah_env(root / "storage")
    make_base_image(env, BASE_IMAGE, root)
    return env


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry"), with_auth=True) as reg:
        yield reg


@pytest.fixture(autouse=True)
def _buildah_storage(buildah: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in buildah.items():
        monkeypatch.setenv(key, value)


@dataclass
class FluxReceiver:
    calls: list[tuple[str, bytes, str]] = field(default_factory=list)  # path, body, signature

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.calls.append((request.url.path, body, request.headers.get("X-Signature", "")))
        return Response(status_code=200)


@pytest.fixture
def flux() -> Iterator[tuple[FluxReceiver, str]]:
    receiver = FluxReceiver()
    app = Starlette(routes=[Route("/hook/{digest}", receiver.hook, methods=["POST"])])
    with serve(app) as url:
        yield receiver, f"{url}/hook/5f0c0ffee"


class Repo:
    """A working repository and its bare clone, which the build fetches from."""

    def __init__(self, base: Path) -> None:
        self.work, self.bare = base / "work", base / "app.git"
        base.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--initial-branch=main", str(self.work), cwd=base)
        self._git("init", "--quiet", "--bare", str(self.bare), cwd=base)

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd or self.work, check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, files: dict[str, str]) -> str:
        for name, text in files.items():
            (self.work / name).write_text(text)
        self._git("add", "-A")
        self._git("commit", "--quiet", "-m", "change")
        self._git("push", "--quiet", str(self.bare), "HEAD:main")
        return self._git("rev-parse", "HEAD")


def _args(
    repo: Repo, sha: str, registry: Registry, tmp_path: Path, *extra: str, creds: bool = True
) -> list[str]:
    password_file = tmp_path / "registry-password"
    password_file.write_text(f"{PASSWORD}\n")
    flags = ["--registry-username", USERNAME, "--registry-password-file", str(password_file)]
    return [
        "--repo", str(repo.bare),
        "--commit", sha,
        "--image", f"{registry.host}/{REPO}",
        *(flags if creds else []),
        "--no-tls-verify",
        "--base-image", BASE_IMAGE,
        "--builder", "buildah",  # the layer builder: test_oci_layer_build.py
        *extra,
    ]  # fmt: skip


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = build_main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _client(registry: Registry) -> OciClient:
    return OciClient(registry.url, username=registry.username, password=registry.password)


def _tags(registry: Registry, repo: str = REPO) -> list[str]:
    with _client(registry) as client:
        return sorted(client.list_tags(repo))


@pytest.mark.slow
def test_build_skip_retag_and_rebuild(
    registry: Registry,
    flux: tuple[FluxReceiver, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver, hook_url = flux
    token_file = tmp_path / "flux-token"
    token_file.write_text(FLUX_TOKEN)
    notify = ["--flux-receiver-url", hook_url, "--flux-receiver-token-file", str(token_file)]
    repo = Repo(tmp_path / "repo")
    deps_a = {"requirements.txt": "streamlit==1.40.0\n"}
    sha1 = repo.commit({"app.py": "print('v1')\n", **deps_a})

    # 1. Nothing in the registry: build, label, push, ping Flux.
    code, out, err = _run(_args(repo, sha1, registry, tmp_path, *notify), capsys)
    assert (code, err) == (0, ""), out
    assert "stub uv pip install --system --no-cache -r requirements.txt" in out  # RUN ran
    assert PASSWORD not in out
    [tag1] = _tags(registry)
    assert re.match(TAG_PATTERN, tag1)
    assert tag1.startswith(f"main-{sha1[:8]}-")
    hash_a = dependency_hash({k: v.encode() for k, v in deps_a.items()})
    with _client(registry) as client:
        labels = client.image_labels(REPO, tag1)
        config = client.get_config(REPO, client.get_manifest(REPO, tag1))["config"]
        digest1 = client.fetch_manifest(REPO, tag1).digest
    assert labels[DEPENDENCY_HASH_LABEL] == hash_a
    assert labels[REVISION_LABEL] == sha1
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", labels[CREATED_LABEL])
    assert config["User"] == "10001:10001"
    assert "8501/tcp" in config["ExposedPorts"]
    assert config["Cmd"][:5] == ["python", "-m", "streamlit", "run", "app.py"]
    assert f"pushed: {registry.host}/{REPO}:{tag1} ({digest1})" in out
    [(path, body, signature)] = receiver.calls
    assert path == "/hook/5f0c0ffee"
    assert json.loads(body) == {"image": f"{registry.host}/{REPO}:{tag1}"}
    expected = hmac.new(FLUX_TOKEN.encode(), body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"

    # 2. The same commit again: skip. Credentials from Nakama's settings this time.
    with monkeypatch.context() as env:
        env.setenv("NAKAMA_HARBOR__URL", registry.url)
        env.setenv("NAKAMA_HARBOR__USERNAME", USERNAME)
        env.setenv("NAKAMA_HARBOR__PASSWORD", PASSWORD)
        code, out, err = _run(_args(repo, sha1, registry, tmp_path, *notify, creds=False), capsys)
    assert (code, err) == (0, "")
    assert f"skip: image {tag1} already has dependencies {hash_a}" in out
    assert "build:" not in out
    assert _tags(registry) == [tag1]
    assert len(receiver.calls) == 1  # nothing new to roll out

    # 3. A code-only change: skip as well (the CI template's flag names; a hash that differs
    # from Nakama's is reported).
    sha2 = repo.commit({"app.py": "print('v2')\n"})
    extra = ["--ref", "main", "--project", "demo", "--dep-hash", "0123456789abcdef"]
    code, out, _ = _run(_args(repo, sha2, registry, tmp_path, *extra), capsys)
    assert code == 0
    assert f"checkout: {sha2[:12]} of demo from" in out
    assert "warning: Nakama computed dependencies 0123456789abcdef" in out
    assert f"skip: image {tag1} already has dependencies {hash_a}" in out

    # 4. A dependency change: a new build under a newer tag.
    sha3 = repo.commit({"requirements.txt": "streamlit==1.41.0\n"})
    code, out, _ = _run(_args(repo, sha3, registry, tmp_path), capsys)
    assert code == 0, out
    [tag3] = sorted(set(_tags(registry)) - {tag1})
    assert tag3.startswith(f"main-{sha3[:8]}-") and tag3[-14:] > tag1[-14:]
    with _client(registry) as client:
        assert client.image_labels(REPO, tag3)[REVISION_LABEL] == sha3
        assert client.image_labels(REPO, tag3)[DEPENDENCY_HASH_LABEL] != hash_a

    # 5. Back to the first dependencies: no build, the first image under a new, newest tag.
    sha4 = repo.commit(deps_a)
    code, out, _ = _run(_args(repo, sha4, registry, tmp_path), capsys)
    assert code == 0, out
    assert "build:" not in out
    [tag4] = sorted(set(_tags(registry)) - {tag1, tag3})
    assert f"retag: image {tag1} has dependencies {hash_a}; tagged it {tag4}" in out
    assert tag4[-14:] > tag3[-14:]
    with _client(registry) as client:
        assert client.fetch_manifest(REPO, tag4).digest == digest1


@pytest.mark.slow
def test_own_dockerfile_is_used_and_a_failed_build_pushes_nothing(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(tmp_path / "repo")
    sha = repo.commit(
        {"app.py": "print(1)\n", "Dockerfile": f"FROM {BASE_IMAGE}\nRUN echo own-step && exit 3\n"}
    )
    args = _args(repo, sha, registry, tmp_path)
    args[args.index("--image") + 1] = f"{registry.host}/nakama-apps/broken"
    code, out, err = _run(args, capsys)
    assert code == 1
    assert "dockerfile: the repository's own" in out
    assert "own-step" in out
    assert err.startswith("nakama build: error: buildah build failed")
    assert len(err.splitlines()) == 1
    with pytest.raises(NotFound, match="NAME_UNKNOWN"):
        _tags(registry, "nakama-apps/broken")


def test_wrong_registry_password_fails_without_echoing_it(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(tmp_path / "repo")
    sha = repo.commit({"requirements.txt": "streamlit\n"})
    args = _args(repo, sha, registry, tmp_path)
    (tmp_path / "registry-password").write_text("Not-The-Password-42\n")
    code, out, err = _run(args, capsys)
    assert code == 1
    assert "401" in err
    assert "Not-The-Password-42" not in out + err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--commit": "abc123"}, "--commit must be a full hash"),
        ({"--image": "no-registry-here"}, "--image must be REGISTRY/PROJECT/NAME"),
        ({"--image": "registry.example.com/Apps/Demo"}, "not a repository name"),
        ({"--image": "registry.example.com/apps/demo:1.0"}, "must not name a tag"),
        ({"--registry-password-file": "/nonexistent/file"}, "cannot read the registry password"),
    ],
)
def test_bad_arguments_exit_2(
    change: dict[str, str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(host="registry.example.com", url="https://registry.example.com")
    args = _args(Repo(tmp_path / "repo"), "a" * 40, registry, tmp_path)
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    code, _, err = _run(args, capsys)
    assert code == 2
    assert message in err


def test_missing_required_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_main(["--repo", "x"]) == 2
    assert "required" in capsys.readouterr().err
