"""A real OCI registry and a private buildah for tests.

The registry is Debian's ``docker-registry`` (the CNCF distribution registry, the engine inside
Harbor) on a free loopback port, storing into a temporary directory, optionally behind htpasswd
Basic auth or behind a Docker token service (:class:`TokenService`: Bearer challenges, JWTs
granting per-repository actions, as Harbor's registry answers).

buildah gets its own vfs storage and chroot isolation through the environment, so tests touch
nothing of the machine's. Nothing can be pulled from the internet here, so tests make their own
base images: for buildah, this machine's ``dash`` and C library, plus ``pip`` and ``uv``
stand-ins that print their arguments, which is all a generated Dockerfile's ``RUN`` steps need;
for the layer builder, this machine's Python at its own path with the part of its standard
library a test imports (:func:`python_rootfs`), pushed straight through the HTTP API, and
pulled back and unpacked as a container runtime would (:func:`pull_rootfs`).
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"
USERNAME = "robot$nakama+ci"
PASSWORD = "s3cret-Passw0rd"
# bcrypt (the only scheme distribution's htpasswd accepts) of PASSWORD, cost 4 to keep it quick.
_PASSWORD_BCRYPT = "$2b$04$vQufAWXf16crJ4ujZEBCIeXKCG7O8acFP8E6b7N3xFLjlMq7kY4ji"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:<port>, as it appears in image names
    url: str  # http://<host>
    username: str | None = None
    password: str | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"{binary} is not installed: run `apt-get install {package}`")
    return found


@dataclass(frozen=True)
class TokenAuth:
    """docker-registry's ``auth: token:`` settings: tokens from ``realm``, for ``service``,
    signed by ``issuer``'s key whose certificate is the file ``certificate``."""

    realm: str
    service: str
    issuer: str
    certificate: Path


@contextmanager
def registry_server(
    root: Path | None = None, *, with_auth: bool = False, token: TokenAuth | None = None
) -> Iterator[Registry]:
    """Run docker-registry until the block ends; yield where it listens. ``with_auth``: Basic
    auth for :data:`USERNAME`; ``token``: Bearer tokens from a token service (Harbor's way)."""
    binary = _require(REGISTRY_BIN if os.path.exists(REGISTRY_BIN) else "docker-registry",
                      "docker-registry")  # fmt: skip
    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="nakama-registry-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-only-upload-secret"},
    }
    if with_auth:
        (root / "htpasswd").write_text(f"{USERNAME}:{_PASSWORD_BCRYPT}\n")
        config["auth"] = {"htpasswd": {"realm": "nakama-test", "path": str(root / "htpasswd")}}
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.certificate),
            }
        }
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen(
        [binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    registry = Registry(
        host=f"127.0.0.1:{port}",
        url=f"http://127.0.0.1:{port}",
        username=USERNAME if with_auth else None,
        password=PASSWORD if with_auth else None,
    )
    try:
        _wait_until_up(registry.url, proc, root / "registry.log")
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/v2/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise RuntimeError("docker-registry did not start within 20 s")


# --- images written straight through the HTTP API (no buildah) -----------------------------
def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = _digest(data)
    if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
        return digest
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    start.raise_for_status()
    # The upload URL carries state in its query: merge the digest into it.
    location = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})
    done = client.put(location, content=data,
                      headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    done.raise_for_status()
    return digest


def _tiny_layer(name: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = f"{name}\n".encode()
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_test_image(
    registry: Registry, repo: str, tag: str, *, labels: Mapping[str, str]
) -> tuple[str, dict[str, object]]:
    """Push a one-layer OCI image with ``labels`` as ``repo:tag``; returns (digest, manifest)."""
    with httpx.Client(base_url=registry.url, auth=registry.auth, timeout=30) as client:
        layer = _tiny_layer(f"{repo}-{tag}.txt")
        layer_digest = _push_blob(client, repo, layer)
        diff_id = _digest(gzip.decompress(layer))
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": dict(labels)},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
        config_digest = _push_blob(client, repo, config)
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
        body = json.dumps(manifest).encode()
        response = client.put(f"/v2/{repo}/manifests/{tag}", content=body,
                              headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
        response.raise_for_status()
        return _digest(body), manifest


def push_test_index(registry: Registry, repo: str, tag: str, *, manifests: list[dict[str, object]]
                    ) -> str:  # fmt: skip
    """Push an OCI index of already pushed manifests (``digest``, ``size``, ``platform``)."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, **m} for m in manifests]}  # fmt: skip
    body = json.dumps(index).encode()
    with httpx.Client(base_url=registry.url, auth=registry.auth, timeout=30) as client:
        response = client.put(f"/v2/{repo}/manifests/{tag}", content=body,
                              headers={"Content-Type": OCI_INDEX})  # fmt: skip
        response.raise_for_status()
    return _digest(body)


# --- buildah -------------------------------------------------------------------------------
_STUB = '#!/bin/sh\necho "stub {name} $*"\n'


def buildah_env(root: Path) -> dict[str, str]:
    """Environment variables that give buildah a private vfs storage under ``root``."""
    _require("buildah", "buildah")
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n'
    )
    return {"CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}


def _buildah(env: Mapping[str, str], *args: str) -> str:
    proc = subprocess.run(
        ["buildah", *args], env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {args[0]} failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


def make_base_image(env: Mapping[str, str], name: str, workdir: Path) -> str:
    """Commit a ~2.5 MB image ``name`` into buildah's storage: ``/bin/sh`` (this machine's dash
    and its C library) and printing stand-ins for ``pip`` and ``uv``."""
    rootfs = workdir / "base-rootfs"
    shell = Path(os.path.realpath("/bin/sh"))
    files = [shell, *_shared_libraries(shell)]
    for path in files:
        target = rootfs / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (rootfs / "bin").mkdir(exist_ok=True)
    if not (rootfs / "bin" / "sh").exists():
        shutil.copy2(shell, rootfs / "bin" / "sh")
    bindir = rootfs / "usr" / "local" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for stub in ("pip", "uv", "python"):
        (bindir / stub).write_text(_STUB.format(name=stub))
        (bindir / stub).chmod(0o755)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    container = _buildah(env, "from", "scratch")
    try:
        _buildah(env, "copy", container, str(rootfs), "/")
        _buildah(env, "config", "--env", "PATH=/usr/local/bin:/usr/bin:/bin", container)
        _buildah(env, "commit", "--quiet", container, name)
    finally:
        _buildah(env, "rm", container)
    return name


def _shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads (from ldd), with their real paths and link names."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found: list[Path] = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(Path(path))
    return found


# --- a Python base image and pulling images back ---------------------------------------------
def python_probe(python: str, *imports: str) -> tuple[str, list[Path]]:
    """The base prefix of ``python`` and the standard library files it loads to import
    ``imports`` (its startup included)."""
    code = (
        "import json, sys\n"
        f"for name in {list(imports)!r}: __import__(name)\n"
        "files = [m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)]\n"
        "print(json.dumps([sys.base_prefix, files]))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    prefix, files = json.loads(out)
    stdlib = Path(prefix) / "lib"
    keep = [Path(f) for f in files if Path(f).is_relative_to(stdlib) and "site-packages" not in f]
    return prefix, keep


def python_rootfs(rootfs: Path, *, python: str, imports: tuple[str, ...] = ()) -> dict[str, str]:
    """A root file system holding ``python`` at its own path with the part of its standard
    library that its startup and ``imports`` need, its shared libraries, ``/tmp``; returns the
    environment an official python image sets (PATH, PYTHON_VERSION)."""
    real = Path(os.path.realpath(python))
    prefix, modules = python_probe(str(real), *imports)
    version = subprocess.run(
        [str(real), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    lib = Path(prefix) / "lib" / f"python{version.rsplit('.', 1)[0]}"
    wanted = {real, *modules, lib / "os.py", *_shared_libraries(real)}
    for module in modules:
        if module.suffix == ".so":
            wanted.update(_shared_libraries(module))
    for path in sorted(wanted):
        target = rootfs / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (rootfs / lib.relative_to("/") / "lib-dynload").mkdir(parents=True, exist_ok=True)
    bindir = rootfs / real.parent.relative_to("/")
    for alias in ("python3", "python"):
        if not (bindir / alias).exists():
            (bindir / alias).symlink_to(real.name)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)  # noqa: S103 - /tmp, as in every image
    for mountpoint in ("proc", "dev"):  # where a runtime mounts them, as in any image
        (rootfs / mountpoint).mkdir(exist_ok=True)
    return {"PATH": f"{real.parent}:/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION": version}


def _tar_layer(add: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return gzip.compress(raw.getvalue(), mtime=0)


def _rooted(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def push_rootfs_image(
    registry: Registry,
    repo: str,
    tag: str,
    rootfs: Path,
    *,
    env: Mapping[str, str],
    whiteouts: tuple[str, ...] = (),
    credentials: tuple[str, str] | None = None,
) -> str:
    """Push ``rootfs`` as a base image (an OCI manifest written here, not by Nakama's layer
    writer): its first layer the tree, a second one holding a whiteout per ``whiteouts``
    path, as an image whose build deleted files has. Returns the manifest digest."""

    def tree(tar: tarfile.TarFile) -> None:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name, filter=_rooted)

    def deletions(tar: tarfile.TarFile) -> None:
        for path in whiteouts:
            parent, _, name = path.strip("/").rpartition("/")
            entry = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
            tar.addfile(entry, io.BytesIO(b""))

    layers = [_tar_layer(tree)] + ([_tar_layer(deletions)] if whiteouts else [])
    with _http(registry, credentials) as client:
        digests = [_push_blob(client, repo, layer) for layer in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": [f"{k}={v}" for k, v in env.items()], "Cmd": ["python3"]},
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [_digest(gzip.decompress(layer)) for layer in layers],
                },
                "history": [{"created_by": "tests.registry"} for _ in layers],
            },
            sort_keys=True,
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _push_blob(client, repo, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest,
                    "size": len(layer),
                }
                for digest, layer in zip(digests, layers, strict=True)
            ],
        }
        body = json.dumps(manifest).encode()
        response = client.put(f"/v2/{repo}/manifests/{tag}", content=body,
                              headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
        response.raise_for_status()
    return _digest(body)


@dataclass(frozen=True)
class Pulled:
    manifest: dict[str, object]
    config: dict[str, object]
    layer_digests: list[str]


def pull_rootfs(
    registry: Registry,
    repo: str,
    ref: str,
    dest: Path,
    *,
    credentials: tuple[str, str] | None = None,
) -> Pulled:
    """Pull ``repo:ref`` and unpack its layers in order into ``dest`` as a container runtime
    does: a ``.wh.<name>`` entry deletes ``<name>`` of the layers below, ``.wh..wh..opq``
    empties its directory of them."""
    accept = ", ".join([OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"])
    with _http(registry, credentials) as client:
        response = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
        response.raise_for_status()
        manifest = response.json()
        config = client.get(f"/v2/{repo}/blobs/{manifest['config']['digest']}")
        config.raise_for_status()
        digests = [str(layer["digest"]) for layer in manifest["layers"]]
        dest.mkdir(parents=True, exist_ok=True)
        for digest in digests:
            blob = client.get(f"/v2/{repo}/blobs/{digest}")
            blob.raise_for_status()
            assert _digest(blob.content) == digest
            _apply_layer(gzip.decompress(blob.content), dest)
    return Pulled(manifest=manifest, config=config.json(), layer_digests=digests)


def _http(registry: Registry, credentials: tuple[str, str] | None) -> httpx.Client:
    """A client that logs in as ``credentials`` (default: the registry's own user) whichever
    way the registry asks: Basic, or a Bearer token from its token service."""
    from pydantic import SecretStr

    from nakama.clients.oci import RegistryAuth

    user, password = credentials or registry.auth or (None, None)
    auth = RegistryAuth(user, SecretStr(password) if password is not None else None)
    return httpx.Client(base_url=registry.url, auth=auth, timeout=60)


def _apply_layer(tar_bytes: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        members = tar.getmembers()
        for member in members:  # whiteouts first: they act on the layers below only
            name = os.path.normpath(member.name.lstrip("/"))
            parent, base = os.path.split(name)
            if base == ".wh..wh..opq":
                for child in (dest / parent).iterdir() if (dest / parent).is_dir() else ():
                    _remove(child)
            elif base.startswith(".wh."):
                _remove(dest / parent / base[len(".wh.") :])
        for member in members:
            name = os.path.normpath(member.name.lstrip("/"))
            if name.startswith("..") or os.path.basename(name).startswith(".wh."):
                continue
            target = dest / name
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            if member.isdir() and target.is_dir():
                continue
            tar.extract(member, dest, filter="tar")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- a Docker token service (Harbor's way of authenticating registry clients) ---------------
@dataclass
class Grant:
    """A token service user: its password and, per repository pattern (fnmatch), the actions
    it may be given (Harbor: a robot's project permissions)."""

    password: str
    access: dict[str, set[str]]


@dataclass
class TokenRequest:
    user: str | None  # None: anonymous
    service: str
    scopes: list[str]  # as requested, one per scope parameter
    granted: list[dict[str, object]]  # the token's access claim


@dataclass
class TokenService:
    """A token endpoint as the distribution spec describes it (``GET /token?service=…&scope=…``
    with Basic credentials; anonymous gets no access): each requested scope is granted the
    actions the user has on that repository, and no more, so a wider scope comes back from the
    registry as ``401 error="insufficient_scope"``. Tokens are JWTs (RS256) whose ``x5c``
    header carries the certificate docker-registry trusts."""

    users: dict[str, Grant]
    service: str = "nakama-test-registry"
    issuer: str = "nakama-test-token-issuer"
    lifetime_s: int = 300
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.now(UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def certificate_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self._cert.public_bytes(Encoding.PEM)

    def grant(self, user: str | None, scope: str) -> dict[str, object] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            return None
        allowed: set[str] = set()
        if user is not None:
            for pattern, granted in self.users[user].access.items():
                if fnmatch.fnmatchcase(name, pattern):
                    allowed |= granted
        wanted = [a for a in actions.split(",") if a]
        return {"type": kind, "name": name, "actions": [a for a in wanted if a in allowed]}

    def issue(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.serialization import Encoding

        access = [g for scope in scopes if (g := self.grant(user, scope)) is not None]
        self.requests.append(TokenRequest(user, self.service, scopes, access))
        now = int(time.time())
        der = self._cert.public_bytes(Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer, "sub": user or "", "aud": self.service,
            "exp": now + self.lifetime_s, "nbf": now - 5, "iat": now,
            "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(header)}.{_b64url(claims)}".encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64url(signature)}"

    async def token(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        user: str | None = None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            grant = self.users.get(name)
            if grant is None or not secrets.compare_digest(grant.password, password):
                body = {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}
                return JSONResponse(body, status_code=401)
            user = name
        if request.query_params.get("service") != self.service:
            return JSONResponse({"errors": [{"code": "DENIED"}]}, status_code=400)
        scopes = request.query_params.getlist("scope")
        token = self.issue(user, scopes)
        return JSONResponse({"token": token, "access_token": token,
                             "expires_in": self.lifetime_s})  # fmt: skip


def _b64url(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@contextmanager
def token_registry_server(root: Path, service: TokenService) -> Iterator[Registry]:
    """docker-registry behind ``service``'s tokens (served on loopback); the yielded Registry
    carries no credentials: each test logs in as one of the service's users."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from tests.support import serve

    root.mkdir(parents=True, exist_ok=True)
    certificate = root / "token-issuer.pem"
    certificate.write_bytes(service.certificate_pem())
    app = Starlette(routes=[Route("/token", service.token)])
    with serve(app) as url:
        auth = TokenAuth(f"{url}/token", service.service, service.issuer, certificate)
        with registry_server(root, token=auth) as registry:
            yield registry
