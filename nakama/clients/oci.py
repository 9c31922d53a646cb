"""The OCI distribution client: tags, manifests, image configs and blobs over a registry's
``/v2/`` API.

The build job asks the registry whether an image for a dependency hash exists (the hash is an image
label, so the answer lies in each image's config blob), and the cluster registry adapter asks the
same. The build job's layer path also pushes through it: blobs (a cross-repository mount where the
registry has the blob already, else an upload: one ``PUT`` for a small blob, ``PATCH`` chunks then
a closing ``PUT`` for a large one), then the manifest. Harbor, the CNCF distribution registry and
every other registry speak this API.

Authentication follows the Docker token flow: a request goes out without credentials; a ``401``
with ``WWW-Authenticate: Basic`` is retried with the user name and password, one with ``Bearer
realm=…,service=…,scope=…`` (Harbor's answer) makes us fetch a token from the realm, with the
credentials if there are any, and retry with it. Tokens are kept per repository until the
registry refuses them: a token that grants too little (a pull token, then a push) or has expired
is answered with a new challenge, and the flow runs again once for that request.

Errors: ``NotFound`` (404), ``Unauthorized`` (401/403), ``TemporaryError`` (429, 5xx, timeouts;
retried with back-off first), ``PermanentError`` (anything else). Messages carry the method, the
path and the registry's error code, never a credential or token.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx
from pydantic import SecretStr
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from nakama.clients.git import mask_credentials
from nakama.errors import (
    InvalidInput,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.settings import HarborSettings

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

# distribution's reference grammar (reference/regexp.go), path components only.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]+$")
_REPO_IN_PATH = re.compile(r"^/v2/(.+?)/(?:tags|manifests|blobs)/")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')
_MAX_MESSAGE = 300
_MAX_PAGES = 10_000
_COPY_BYTES = 1024 * 1024
# Blobs up to this size go in one PUT; larger ones in PATCH chunks of this size, so that one
# request never holds more than this in memory (and a re-challenged request can be sent again).
CHUNK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry stored it: re-pushing ``content`` keeps its digest."""

    media_type: str
    digest: str
    content: bytes

    def json(self) -> dict[str, Any]:
        return _parse_json(self.content, what=f"manifest {self.digest}")


DOCKER_HUB = "docker.io"  # as image names spell it; its API is at DOCKER_HUB_API
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageReference:
    """An image name taken apart: ``python:3.11-slim`` is ``docker.io``, ``library/python``,
    tag ``3.11-slim``; ``harbor.example.org/proxy/library/python@sha256:…`` names a digest."""

    registry: str  # host[:port] as in the name
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.registry}/{self.repository}{tag}" + (
            f"@{self.digest}" if self.digest else ""
        )


def parse_image_reference(name: str) -> ImageReference:
    """``name`` the way docker and buildah read it (distribution's reference normalisation)."""
    rest, _, digest = name.strip().partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    path, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not _REPOSITORY.match(path) or (colon and not _TAG.match(tag)):
        raise InvalidInput(f"not an image reference: {name!r}")
    if digest and not _DIGEST.match(digest):
        raise InvalidInput(f"not an image digest: {name!r}")
    return ImageReference(registry, path, tag or None, digest or None)


def registry_api_url(host: str, *, tls_verify: bool) -> str:
    """``https://host``; without TLS verification, ``http://host`` if HTTPS is not spoken there
    (what buildah does with ``--tls-verify=false``)."""
    if tls_verify:
        return f"https://{host}"
    try:
        httpx.get(f"https://{host}/v2/", verify=False, timeout=10)  # noqa: S501 - asked for
    except httpx.ConnectError:
        return f"http://{host}"
    except httpx.HTTPError:
        pass
    return f"https://{host}"


class RegistryAuth(httpx.Auth):
    """The Docker registry token flow (Basic or Bearer, whichever the registry asks for)."""

    requires_response_body = True

    def __init__(self, username: str | None, password: SecretStr | None) -> None:
        self._basic = (
            httpx.BasicAuth(username, password.get_secret_value())
            if username and password is not None
            else None
        )
        self._tokens: dict[str, str] = {}  # repository ("" for /v2/ itself) -> bearer token
        self._basic_wanted = False  # the registry answered with a Basic challenge before

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = _repository_of(request.url.path)
        token = self._tokens.get(key)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._basic_wanted and self._basic is not None:
            request = next(self._basic.auth_flow(request))
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._basic is None or self._basic_wanted:
                return  # no credentials, or these ones were just refused
            self._basic_wanted = True
            yield next(self._basic.auth_flow(request))
        elif scheme == "bearer" and params.get("realm"):
            token_response = yield self._token_request(params, request.url)
            if token_response.status_code != 200:
                return  # the caller sees the token endpoint's refusal and translates it
            token = _token_from(token_response)
            self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _token_request(self, params: Mapping[str, str], registry: httpx.URL) -> httpx.Request:
        # One ``scope`` parameter per scope: distribution joins several (a mount's pull of the
        # source besides the push) with spaces in the challenge, and token services that read
        # the parameter as one scope (Harbor's, Docker's) want them apart.
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", scope) for scope in params.get("scope", "").split()]
        # Added to the realm's own query, which a realm may carry.
        url = httpx.URL(params["realm"])
        url = url.copy_with(params=httpx.QueryParams([*url.params.multi_items(), *query]))
        token_request = httpx.Request("GET", url)
        # The realm is the registry's word: credentials go only to HTTPS or to the registry itself.
        if self._basic is not None and (url.scheme == "https" or url.host == registry.host):
            token_request = next(self._basic.auth_flow(token_request))
        return token_request


class OciClient:
    """One registry's ``/v2/`` API. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: SecretStr | str | None = None,
        verify: bool = True,
        timeout_s: float = 30.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        chunk_bytes: int = CHUNK_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise InvalidInput(f"registry URL must be http(s)://host[:port], got {url!r}")
        self.url = f"{parts.scheme}://{parts.netloc}"
        secret = SecretStr(password) if isinstance(password, str) else password
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._chunk_bytes = max(1, chunk_bytes)
        self._client = httpx.Client(
            base_url=self.url,
            auth=RegistryAuth(username, secret),
            verify=verify,
            timeout=timeout_s,
            follow_redirects=True,  # Harbor on object storage redirects blob reads
            transport=transport,
            headers={"User-Agent": "nakama"},
        )

    @classmethod
    def from_settings(cls, settings: HarborSettings) -> OciClient:
        return cls(
            settings.url,
            username=settings.username,
            password=settings.password,
            verify=settings.verify_ssl,
            timeout_s=settings.timeout_s,
            max_attempts=settings.max_attempts,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OciClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------
    def ping(self) -> None:
        """Check that the registry answers and accepts our credentials."""
        self._request("GET", "/v2/")

    def list_tags(self, repo: str, *, page_size: int = 100) -> list[str]:
        """Every tag of ``repo``, following ``Link: <…>; rel="next"`` pages.

        Raises :class:`NotFound` when the repository does not exist (nothing was pushed yet).
        """
        path: str | None = f"/v2/{check_repository(repo)}/tags/list?n={page_size}"
        tags: list[str] = []
        seen: set[str] = set()
        while path is not None and len(seen) < _MAX_PAGES:
            seen.add(path)
            response = self._request("GET", path)
            body = _parse_json(response.content, what=f"tag list of {repo}")
            tags.extend(str(tag) for tag in body.get("tags") or ())
            following = response.links.get("next", {}).get("url")
            path = _same_origin_path(self.url, path, following) if following else None
            if path in seen:
                break
        return tags

    def fetch_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest (or index) that ``ref`` (a tag or digest) names, byte for byte."""
        path = f"/v2/{check_repository(repo)}/manifests/{_check_ref(ref)}"
        response = self._request("GET", path, headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
        content = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            media_type = str(_parse_json(content, what=f"manifest {repo}:{ref}").get("mediaType"))
        digest = response.headers.get("Docker-Content-Digest") or _sha256(content)
        return Manifest(media_type=media_type, digest=digest, content=content)

    def get_manifest(self, repo: str, ref: str) -> dict[str, Any]:
        """The parsed manifest (or index) that ``ref`` names."""
        return self.fetch_manifest(repo, ref).json()

    def fetch_image_manifest(self, repo: str, ref: str, *, architecture: str = "amd64") -> Manifest:
        """The image manifest ``ref`` names; for an index, that of its linux/``architecture``
        image."""
        manifest = self.fetch_manifest(repo, ref)
        if manifest.media_type in INDEX_MEDIA_TYPES or "manifests" in manifest.json():
            manifest = self.fetch_manifest(repo, _pick_platform(manifest.json(), architecture))
        return manifest

    def get_config(self, repo: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The image config blob of ``manifest``; for an index, that of its linux/amd64 image."""
        if manifest.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in manifest:
            manifest = self.get_manifest(repo, _pick_platform(manifest))
        digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise PermanentError(f"manifest in {repo} has no config digest")
        response = self._request("GET", f"/v2/{check_repository(repo)}/blobs/{digest}")
        if digest.startswith("sha256:") and _sha256(response.content) != digest:
            raise PermanentError(f"config blob {digest} in {repo} does not match its digest")
        return _parse_json(response.content, what=f"config {digest}")

    def image_labels(self, repo: str, tag: str) -> dict[str, str]:
        """The labels of the image ``repo:tag`` (empty if it has none)."""
        config = self.get_config(repo, self.get_manifest(repo, tag))
        labels = (config.get("config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def find_by_label(
        self, repo: str, key: str, value: str, *, newest_first_tags: Iterable[str]
    ) -> str | None:
        """The first of ``newest_first_tags`` whose image has label ``key`` = ``value``, or None.

        Tags that vanish while we look (a retention run) are skipped.
        """
        for tag in newest_first_tags:
            try:
                labels = self.image_labels(repo, tag)
            except NotFound:
                continue
            if labels.get(key) == value:
                return tag
        return None

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The size of blob ``digest`` in ``repo``, or None if ``repo`` does not have it."""
        path = f"/v2/{check_repository(repo)}/blobs/{_check_digest(digest)}"
        try:
            response = self._request("HEAD", path)
        except NotFound:
            return None
        return int(response.headers.get("Content-Length") or 0)

    def download_blob(self, repo: str, digest: str, target: Path) -> int:
        """Write blob ``digest`` of ``repo`` into the file ``target``, checking its digest;
        returns its size. A blob that does not match is removed and refused."""
        path = f"/v2/{check_repository(repo)}/blobs/{_check_digest(digest)}"
        algorithm, _, expected = digest.partition(":")
        if algorithm not in ("sha256", "sha512"):
            raise PermanentError(f"blob {digest} in {repo}: digest algorithm not supported")
        for attempt in self._retrying():
            with attempt:
                hasher, size = hashlib.new(algorithm), 0
                with (
                    self._stream("GET", path) as response,
                    Path(target).open("wb") as out,
                ):
                    for chunk in response.iter_bytes(_COPY_BYTES):
                        hasher.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if hasher.hexdigest() != expected:
            Path(target).unlink(missing_ok=True)
            raise PermanentError(f"blob {digest} in {repo} does not match its digest")
        return size

    # --- writing -------------------------------------------------------------------------
    def mount_blob(self, repo: str, digest: str, *, from_repo: str) -> bool:
        """Link blob ``digest`` of ``from_repo`` (same registry) into ``repo`` without sending
        it; False if the registry did not (it lacks the blob, the credentials may not read
        ``from_repo``, or it does not mount): then :meth:`push_blob` it."""
        query = urlencode({"mount": _check_digest(digest), "from": check_repository(from_repo)})
        start = f"/v2/{check_repository(repo)}/blobs/uploads/?{query}"
        response = self._request("POST", start, headers={"Content-Length": "0"})
        if response.status_code == 201:
            return True
        location = response.headers.get("Location")
        if response.status_code == 202 and location:  # an upload session we will not use
            with contextlib.suppress(NakamaError):
                self._request_once("DELETE", _same_origin_path(self.url, start, location))
        return False

    def push_blob(self, repo: str, blob: Path | bytes, *, digest: str) -> bool:
        """Upload blob ``digest`` (the file or bytes ``blob``) into ``repo`` unless it is there
        already; True if it was sent. The registry checks the digest."""
        repo = check_repository(repo)
        if self.blob_size(repo, _check_digest(digest)) is not None:
            return False
        for attempt in self._retrying():  # a failed session is started again from the start
            with attempt:
                self._upload(repo, blob, digest=digest)
        return True

    def _upload(self, repo: str, blob: Path | bytes, *, digest: str) -> None:
        start = f"/v2/{repo}/blobs/uploads/"
        response = self._request_once("POST", start, headers={"Content-Length": "0"})
        location = self._upload_location(response, start)
        size = len(blob) if isinstance(blob, bytes) else Path(blob).stat().st_size
        octets = {"Content-Type": "application/octet-stream"}
        with _opened(blob) as read:
            if size > self._chunk_bytes:
                offset = 0
                while offset < size:
                    chunk = read(self._chunk_bytes)
                    if not chunk:
                        raise PermanentError(f"blob {digest}: the file shrank while it was sent")
                    end = offset + len(chunk) - 1
                    headers = {**octets, "Content-Range": f"{offset}-{end}"}
                    response = self._request_once("PATCH", location, content=chunk, headers=headers)
                    location = self._upload_location(response, location)
                    offset = end + 1
                body = b""
            else:
                body = read(size + 1)
                if len(body) != size:
                    raise PermanentError(f"blob {digest}: the file changed while it was sent")
        done = _path_and_query(httpx.URL(location).copy_merge_params({"digest": digest}))
        response = self._request_once("PUT", done, content=body, headers=octets)
        stored = response.headers.get("Docker-Content-Digest")
        if response.status_code != 201 or (stored and stored != digest):
            got = f" with digest {stored}" if stored and stored != digest else ""
            raise PermanentError(
                f"registry PUT of blob {digest} in {repo} answered {response.status_code}{got}"
            )

    def _upload_location(self, response: httpx.Response, current: str) -> str:
        """The path (with query) of the upload session a response names, kept in the registry."""
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise PermanentError(
                f"registry blob upload answered {response.status_code} without an upload location"
            )
        return _same_origin_path(self.url, current, location)

    def put_manifest(self, repo: str, ref: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``ref``; returns its digest. Its blobs must be in ``repo``."""
        path = f"/v2/{check_repository(repo)}/manifests/{_check_ref(ref)}"
        response = self._request(
            "PUT", path, content=manifest.content, headers={"Content-Type": manifest.media_type}
        )
        return response.headers.get("Docker-Content-Digest") or manifest.digest

    def tag(self, repo: str, source_ref: str, new_tag: str) -> str:
        """Give the image ``repo:source_ref`` the extra tag ``new_tag``; returns its digest."""
        return self.put_manifest(repo, new_tag, self.fetch_manifest(repo, source_ref))

    # --- plumbing ------------------------------------------------------------------------
    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential(multiplier=self._backoff_s, max=30),
            retry=retry_if_exception_type(TemporaryError),
            reraise=True,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in self._retrying():
            with attempt:
                return self._request_once(method, path, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover - Retrying re-raises

    def _request_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = f"registry {method} {path.split('?')[0]}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TemporaryError(f"{where} timed out") from exc
        except httpx.TransportError as exc:
            detail = mask_credentials(str(exc))[:_MAX_MESSAGE]
            raise TemporaryError(f"{where}: {type(exc).__name__}: {detail}") from exc
        _raise_for_status(response, where)
        return response

    @contextmanager
    def _stream(self, method: str, path: str) -> Iterator[httpx.Response]:
        where = f"registry {method} {path.split('?')[0]}"
        try:
            with self._client.stream(method, path) as response:
                if response.status_code >= 400:
                    response.read()
                _raise_for_status(response, where)
                yield response
        except httpx.TimeoutException as exc:
            raise TemporaryError(f"{where} timed out") from exc
        except httpx.TransportError as exc:
            detail = mask_credentials(str(exc))[:_MAX_MESSAGE]
            raise TemporaryError(f"{where}: {type(exc).__name__}: {detail}") from exc


def _raise_for_status(response: httpx.Response, where: str) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"{where} failed ({status}): {_error_summary(response)}"
    if status == 404:
        raise NotFound(message)
    if status in (401, 403):
        _, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if params.get("error") == "insufficient_scope":
            wanted = params.get("scope") or "the access asked for"
            message += f" (insufficient_scope: these credentials do not grant {wanted})"
        raise Unauthorized(message)
    if status == 429 or status >= 500:
        raise TemporaryError(message)
    raise PermanentError(message)


@contextmanager
def _opened(blob: Path | bytes) -> Iterator[Callable[[int], bytes]]:
    """A ``read(n)`` over the bytes or the file ``blob``."""
    if isinstance(blob, bytes):
        yield io.BytesIO(blob).read
        return
    with Path(blob).open("rb") as f:
        yield f.read


def _path_and_query(url: httpx.URL) -> str:
    return url.raw_path.decode("ascii")


def _repository_of(path: str) -> str:
    match = _REPO_IN_PATH.match(path)
    return match.group(1) if match else ""


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def _token_from(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    token = None
    if isinstance(body, dict):  # distribution's spec says "token"; OAuth2 says "access_token"
        token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise PermanentError("the registry's token service answered without a token")
    return token


def _same_origin_path(base: str, current: str, link: str) -> str:
    """The path (with query) of a ``Link`` target, refused if it leaves the registry."""
    target = urlsplit(urljoin(base + current, link))
    if f"{target.scheme}://{target.netloc}" != base:
        raise PermanentError(f"a registry link (next page, upload) leaves {base}: {target.netloc}")
    return target.path + (f"?{target.query}" if target.query else "")


def _pick_platform(index: Mapping[str, Any], architecture: str = "amd64") -> str:
    entries = [m for m in index.get("manifests") or () if isinstance(m, dict)]
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == architecture:
            return str(entry["digest"])
    if not entries:
        raise PermanentError("image index lists no manifests")
    return str(entries[0]["digest"])


def _error_summary(response: httpx.Response) -> str:
    """The registry's error codes and messages, or the start of the body."""
    try:
        errors = response.json().get("errors")
        text = "; ".join(
            ": ".join(str(e[k]) for k in ("code", "message") if e.get(k)) for e in errors
        )
    except (ValueError, AttributeError, TypeError):
        text = response.text
    return mask_credentials(" ".join(text.split()))[:_MAX_MESSAGE] or response.reason_phrase


def _parse_json(content: bytes, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise PermanentError(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise PermanentError(f"{what} is not a JSON object")
    return data


def _sha256(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def check_repository(repo: str) -> str:
    """``repo`` if it is a valid repository path (``project/name``), else InvalidInput."""
    if not _REPOSITORY.match(repo):
        raise InvalidInput(f"not a repository name: {repo!r}")
    return repo


def _check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise InvalidInput(f"not a digest: {digest!r}")
    return digest


def _check_ref(ref: str) -> str:
    if not (_TAG.match(ref) or _DIGEST.match(ref)):
        raise InvalidInput(f"not a tag or digest: {ref!r}")
    return ref
