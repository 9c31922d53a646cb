"""The Kubernetes client: every call Nakama makes to a Kubernetes API server goes through here.

One place builds a configured :class:`kubernetes.client.ApiClient` (in-cluster service account, a
kubeconfig file, or an explicit host and token) and one place turns the client's exceptions into
Nakama's errors, so that components never catch ``ApiException`` or urllib3 errors themselves:
401/403 become :class:`Unauthorized`, 404 :class:`NotFound`, 409 :class:`Conflict`; 429, 5xx and
network failures are retried with back-off (honouring ``Retry-After``) and then become
:class:`TemporaryError`. Messages carry the operation, the status and the server's short reason,
never a header, and are scrubbed of bearer tokens.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, load_incluster_config, load_kube_config
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from nakama.errors import (
    Conflict,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)

# Seconds for one API call. The API server answers reads and patches in milliseconds; a minute
# would only hide a dead connection.
DEFAULT_TIMEOUT_S = 30.0
_MAX_MESSAGE = 300
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")  # service-account tokens are JWTs


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed call (429, 5xx, network) is retried."""

    attempts: int = 5  # calls in all, the first included
    initial_s: float = 0.5  # the first back-off; doubled after each failure
    max_s: float = 10.0  # cap on one back-off, and on a server's Retry-After


DEFAULT_RETRY = RetryPolicy()


def api_client(
    *,
    host: str | None = None,
    token: str | None = None,
    ca_cert: Path | None = None,
    verify_ssl: bool = True,
    kubeconfig: Path | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
) -> ApiClient:
    """A client configured from the first source given: ``host`` + ``token``, a ``kubeconfig``
    file, the pod's service account (``in_cluster``, or by default when
    ``KUBERNETES_SERVICE_HOST`` is set), else ``$KUBECONFIG`` / ``~/.kube/config``.

    The caller closes it (``with api_client(...) as api:``).
    """
    config = Configuration()
    try:
        if host is not None:
            if not token:
                raise PermanentError("a Kubernetes host needs a token")
            config.host = host.rstrip("/")
            config.api_key = {"authorization": f"Bearer {token}"}
            config.verify_ssl = verify_ssl
            config.ssl_ca_cert = str(ca_cert) if ca_cert else None
        elif kubeconfig is None and (
            in_cluster or (in_cluster is None and os.environ.get("KUBERNETES_SERVICE_HOST"))
        ):
            load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        else:  # the client reads $KUBECONFIG when imported; read it now instead
            path = str(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
            load_kube_config(  # type: ignore[no-untyped-call]
                path, context, client_configuration=config, persist_config=False
            )
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"cannot configure the Kubernetes client: {_scrub(str(exc))}") from exc
    # Retries are ours (below), with back-off and Retry-After; urllib3's would multiply them.
    config.retries = 0
    return ApiClient(config)


def to_json(api: ApiClient, obj: Any) -> dict[str, Any]:
    """A model returned by the client as the API's JSON (camelCase keys), for pure functions."""
    data = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    if not isinstance(data, dict):
        raise PermanentError(f"expected a Kubernetes object, got {type(data).__name__}")
    return data


def kube_call(
    fn: Callable[..., T],
    *args: Any,
    what: str,
    retry: RetryPolicy = DEFAULT_RETRY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` (a generated API method) with retries and Nakama errors.

    ``what`` names the operation for messages, e.g. ``"patching deployment apps/sales"``.
    Only idempotent requests belong here unless the caller handles a retried create's 409.
    """
    kwargs.setdefault("_request_timeout", timeout_s)
    retrying = Retrying(
        stop=stop_after_attempt(max(1, retry.attempts)),
        wait=lambda state: _backoff(state, retry),
        retry=retry_if_exception(_retryable),
        before_sleep=lambda state: log.warning(
            "kubernetes call failed, retrying",
            what=what,
            attempt=state.attempt_number,
            status=_status(state.outcome.exception() if state.outcome else None),
        ),
        reraise=True,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise translate(exc, what=what) from exc


def translate(exc: Exception, *, what: str) -> NakamaError:
    """The Nakama error for one failed call, with a short message that holds no secret."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return TemporaryError(f"{what}: Kubernetes API unreachable ({type(exc).__name__})")
    if not isinstance(exc, ApiException):
        return PermanentError(f"{what}: {type(exc).__name__}")
    status = exc.status or 0
    detail = _server_message(exc)
    message = f"{what}: {status} {exc.reason or ''}".rstrip() + (f": {detail}" if detail else "")
    if status in (401, 403):
        return Unauthorized(message)
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 429 or status >= 500:
        return TemporaryError(message)
    return PermanentError(message)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return True
    return isinstance(exc, ApiException) and (exc.status == 429 or (exc.status or 0) >= 500)


def _backoff(state: RetryCallState, policy: RetryPolicy) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = _retry_after(exc)
    if retry_after is not None:
        return min(retry_after, policy.max_s)
    return float(min(policy.initial_s * 2 ** (state.attempt_number - 1), policy.max_s))


def _retry_after(exc: BaseException | None) -> float | None:
    headers = getattr(exc, "headers", None) if isinstance(exc, ApiException) else None
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date; rare from the API server, so fall back to back-off
        return None


def _status(exc: BaseException | None) -> int | str | None:
    if isinstance(exc, ApiException):
        return int(exc.status or 0)
    return type(exc).__name__ if exc else None


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the server's ``Status`` body (or the body's start), scrubbed."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        parsed = json.loads(body)
        text = str(parsed.get("message", "")) if isinstance(parsed, dict) else body
    except ValueError:
        text = body
    text = " ".join(_scrub(text).split())
    return text[:_MAX_MESSAGE] + ("…" if len(text) > _MAX_MESSAGE else "")


def _scrub(text: str) -> str:
    return _JWT.sub("***", _BEARER.sub(r"\1***", text))
