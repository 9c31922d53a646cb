"""The GitLab client: the one place where Nakama talks to GitLab's REST API.

:func:`build_gitlab` makes a python-gitlab client from :class:`GitLabSettings`;
:meth:`GitLabClient.call` runs every request through one retry policy and one error translation:

* 429 waits as long as ``Retry-After`` says (capped), 5xx, timeouts and connection errors back off
  exponentially; ``settings.max_attempts`` attempts in all, then :class:`TemporaryError`;
* 401/403 become :class:`Unauthorized`, 404 :class:`NotFound`, 409 and "has already been taken"
  :class:`Conflict`, anything else GitLab refuses :class:`PermanentError`;
* messages are cut short and never carry a token; a refusal whose cause is a GitLab setting
  (:data:`HINTS`) says which one and how to fix it.

python-gitlab's own retry loop is kept out of the way: it sleeps with ``time.sleep`` up to ten
times per request, whatever ``max_attempts`` says, and its exceptions do not keep the
``Retry-After`` header. A response hook on the requests session therefore turns every 429 and 5xx
answer into :class:`RetryableResponse` before python-gitlab sees it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import gitlab
import requests
import tenacity

from nakama import __version__
from nakama.errors import (
    Conflict,
    NakamaError,
    NotFound,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from nakama.logs import get_logger
from nakama.settings import GitLabSettings

log = get_logger(__name__)

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# A Retry-After longer than this is cut to it: a caller waits at most this long per attempt.
MAX_RETRY_AFTER_S = 60.0
# Exponential back-off without Retry-After: 0.5 s, 1 s, 2 s … capped at 30 s.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
_MESSAGE_LIMIT = 300
_CONFLICT_HINTS = ("has already been taken", "already exists")
GUIDE = "docs/cluster-install.md, section GitLab"
# GitLab's words for a refusal whose cause is a setting of the operator's, and what to do.
HINTS: tuple[tuple[str, str], ...] = (
    (
        "Insufficient permissions to set pipeline variables",
        "the pipelines project's 'Minimum role to use pipeline variables' "
        "(ci_pipeline_variables_minimum_override_role) is above the role of the trigger token's "
        "owner: set it to that role (Settings > CI/CD > Variables) or run "
        f"'nakama cluster setup gitlab' ({GUIDE})",
    ),
    (
        "Pipeline will not run for the selected trigger",
        "no job of the pipelines project's .gitlab-ci.yml matches: it must include "
        "gitlab-ci-templates/image-builder.gitlab-ci.yml and code-reloader.gitlab-ci.yml "
        "(docs/cluster-install.md, step 2)",
    ),
    (
        "Invalid url given",
        "GitLab refuses webhooks to localhost and the local network unless an administrator "
        "allows them: Admin area > Settings > Network > Outbound requests, 'Allow requests to "
        "the local network from webhooks and integrations', or add Nakama's host to the "
        f"allowlist there; also check NAKAMA_PUBLIC_URL ({GUIDE})",
    ),
    (
        "project bots cannot be added to other groups",
        "a group or project access token's bot user can be a member of its own group or "
        f"project only: use the layouts of {GUIDE}",
    ),
    (
        "push code to protected branches",
        "the branch is protected: only Maintainers push to it, so the token's user needs the "
        "Maintainer role",
    ),
    (
        "not allowed to push into this branch",
        "the branch is protected: only Maintainers push to it, so the token's user needs the "
        "Maintainer role",
    ),
    (
        "Project Not Found",
        "GitLab answers 404 both for a project that does not exist and for one the token's "
        "user may not see",
    ),
    (
        "Group Not Found",
        "GitLab answers 404 both for a group that does not exist and for one the token's user "
        "may not see",
    ),
)


def hint(message: str) -> str | None:
    """What to do about the GitLab refusal ``message``, if it is one of :data:`HINTS`."""
    return next((advice for words, advice in HINTS if words in message), None)


class RetryableResponse(Exception):
    """GitLab answered 429 or 5xx: worth another attempt, after ``retry_after`` if it said."""

    def __init__(self, status: int, *, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` cut short, with every secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text[:_MESSAGE_LIMIT]


def _raise_retryable(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    if response.status_code not in RETRY_STATUSES:
        return
    try:
        detail = response.text.strip()[:_MESSAGE_LIMIT] or response.reason
    finally:
        response.close()
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
    raise RetryableResponse(response.status_code, retry_after=retry_after, detail=detail)


def build_gitlab(
    settings: GitLabSettings, *, session: requests.Session | None = None
) -> gitlab.Gitlab:
    """A python-gitlab client for ``settings`` whose 429/5xx answers raise RetryableResponse."""
    session = session or requests.Session()
    session.hooks["response"].append(_raise_retryable)
    token = settings.token.get_secret_value() if settings.token else None
    return gitlab.Gitlab(
        settings.url,
        private_token=token,
        ssl_verify=settings.verify_ssl,
        timeout=settings.timeout_s,
        retry_transient_errors=False,  # retried by GitLabClient.call, once
        # GitLab's Link headers name its external URL; in a cluster Nakama may reach it by
        # another (a service name), so pages are fetched from the configured one.
        keep_base_url=True,
        per_page=100,
        user_agent=f"nakama/{__version__}",
        session=session,
    )


def is_transient(exc: BaseException) -> bool:
    """True for failures another attempt may cure."""
    if isinstance(exc, RetryableResponse | requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    return isinstance(exc, gitlab.GitlabError) and exc.response_code in RETRY_STATUSES


def translate_error(exc: BaseException, *, what: str, secrets: Iterable[str]) -> NakamaError | None:
    """The Nakama error for a python-gitlab or requests failure; None for anything else."""
    if isinstance(exc, NakamaError):
        return exc
    secrets = tuple(secrets)

    def say(detail: str) -> str:
        said = redact(f"GitLab: {what}: {detail}", secrets)
        advice = hint(detail)
        return f"{said} ({advice})" if advice else said

    if isinstance(exc, RetryableResponse):
        return TemporaryError(say(str(exc)))
    if isinstance(exc, requests.Timeout):
        return TemporaryError(say("timed out"))
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return TemporaryError(say(f"cannot reach GitLab ({type(exc).__name__})"))
    if not isinstance(exc, gitlab.GitlabError):
        return None
    code = exc.response_code
    detail = f"HTTP {code}: {exc.error_message}" if code else str(exc.error_message)
    if code in (401, 403) or isinstance(exc, gitlab.GitlabAuthenticationError):
        return Unauthorized(say(detail))
    if code == 404:
        return NotFound(say(detail))
    if code == 409 or (code == 400 and any(h in str(exc.error_message) for h in _CONFLICT_HINTS)):
        return Conflict(say(detail))
    if code in RETRY_STATUSES:
        return TemporaryError(say(detail))
    return PermanentError(say(detail))


class GitLabClient:
    """python-gitlab behind one retry policy and one error translation.

    ``sleep`` waits between attempts (tests pass a recorder instead of ``time.sleep``);
    ``session`` is the requests session to use (a fresh one by default).
    """

    def __init__(
        self,
        settings: GitLabSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        self.settings = settings
        self.api = build_gitlab(settings, session=session)
        self._sleep = sleep
        self._secrets = tuple(
            s.get_secret_value() for s in (settings.token, settings.trigger_token) if s
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self.api.session.close()

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """Run ``fn`` (python-gitlab calls) with retries; raise only Nakama errors for GitLab's.

        ``what`` names the operation in error messages and logs, e.g. ``"create project demo"``.
        ``fn`` may be run several times, so it must be safe to repeat.
        """
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.settings.max_attempts)),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_transient),
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, what),
            reraise=True,
        )
        try:
            return retrying(fn)
        except Exception as exc:
            translated = translate_error(exc, what=what, secrets=self._secrets)
            if translated is None or translated is exc:
                raise
            raise translated from exc

    @staticmethod
    def _wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableResponse) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER_S)
        return float(min(BACKOFF_INITIAL_S * 2 ** (state.attempt_number - 1), BACKOFF_MAX_S))

    def _log_retry(self, state: tenacity.RetryCallState, what: str) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        log.info(
            "gitlab call retried",
            what=what,
            attempt=state.attempt_number,
            delay_s=delay,
            problem=redact(f"{type(exc).__name__}: {exc}", self._secrets),
        )
