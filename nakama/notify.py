"""Deploy notifications, decided without I/O: what a pipeline's end says to a project's
targets, the body each kind of target takes, its signature, and which target URLs are refused.

Two kinds of target: ``webhook`` (Nakama's JSON, signed with HMAC-SHA256 of the body under the
target's own secret, in ``X-Nakama-Signature: sha256=<hex>``, as GitHub signs its webhooks) and
``slack`` (a Slack-compatible incoming webhook: ``{"text": ...}``, no signature: the URL is the
secret). A URL whose host is, or resolves to, a loopback, private, link-local or otherwise
non-public address is refused unless the operator allows it: GitLab's webhook SSRF advisories
(an outbound request to the instance's own network, chosen by any user) are the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

KINDS = ("webhook", "slack")
SIGNATURE_HEADER = "X-Nakama-Signature"
EVENT_HEADER = "X-Nakama-Event"
DELIVERY_HEADER = "X-Nakama-Delivery"
URL_MAX = 2048
ALLOW_SETTING = "NAKAMA_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS"


@dataclass(frozen=True)
class PipelineEnd:
    """What a finished pipeline says: the facts a notification carries."""

    pipeline_id: int
    project: str
    kind: str  # build, reload, ...
    status: str  # success, failed, canceled
    commit: str
    branch: str
    error: str | None
    app_url: str | None


CRASH_EVENT = "app.crashing"
# The app states in which it is down after stopping on its own (nakama.ports.AppStatus).
_DOWN = ("backoff", "crashed")


@dataclass(frozen=True)
class CrashLoop:
    """An app that keeps stopping on its own: what its notification carries."""

    project: str
    state: str
    restarts: int
    detail: str
    app_url: str | None


def crash_looping(state: str, restarts: int, *, min_restarts: int) -> bool:
    """Whether an app in ``state`` after ``restarts`` restarts is crashing repeatedly."""
    return state in _DOWN and restarts >= min_restarts


def crash_bodies(crash: CrashLoop) -> dict[str, dict[str, object]]:
    """The body of each kind of target for a crash loop."""
    text = f":rotating_light: {crash.project}: the app keeps crashing ({crash.restarts} restarts)"
    if crash.detail:
        text += f": {crash.detail[:300]}"
    return {
        "webhook": {
            "event": CRASH_EVENT,
            "project": crash.project,
            "app": {"state": crash.state, "restarts": crash.restarts, "detail": crash.detail},
            "app_url": crash.app_url,
        },
        "slack": {"text": text},
    }


def event_of(end: PipelineEnd) -> str | None:
    """The notification event of a pipeline's end (None: nothing to say)."""
    if end.status == "failed":
        return "pipeline.failed"
    if end.status == "success":
        return "deploy.succeeded"
    return None


def wants(event: str, *, on_deploy: bool) -> bool:
    """Whether a target takes ``event``: failures always, deploys when asked for."""
    return event == "pipeline.failed" or (event == "deploy.succeeded" and on_deploy)


def webhook_body(event: str, end: PipelineEnd) -> dict[str, object]:
    return {
        "event": event,
        "project": end.project,
        "pipeline": {
            "id": end.pipeline_id,
            "kind": end.kind,
            "status": end.status,
            "commit": end.commit,
            "branch": end.branch,
            "error": end.error,
        },
        "app_url": end.app_url,
    }


def slack_body(event: str, end: PipelineEnd) -> dict[str, object]:
    short = end.commit[:8]
    if event == "pipeline.failed":
        text = f":x: {end.project}: {end.kind} of {short} on {end.branch} failed"
        if end.error:
            text += f": {end.error[:300]}"
    else:
        text = f":white_check_mark: {end.project}: {short} on {end.branch} is live"
        if end.app_url:
            text += f" at {end.app_url}"
    return {"text": text}


def signature(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a target before any look-up (None: nothing)."""
    if len(url) > URL_MAX:
        return f"the URL is longer than {URL_MAX} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "the URL does not parse"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http:// or https:// with a host"
    if parts.username or parts.password:
        return "the URL must not hold credentials"
    return None


def private_address(addresses: Iterable[str]) -> str | None:
    """The first address that is not a public one (loopback, private, link-local, reserved,
    multicast, unspecified, or an IPv4 one mapped into IPv6), or None."""
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        if not address.is_global or address.is_multicast:
            return text
    return None
