"""The one error hierarchy. Adapters translate vendor errors into these; only the HTTP layer maps
them to status codes."""

from __future__ import annotations


class NakamaError(Exception):
    """Root of every error Nakama raises on purpose."""


class InvalidInput(NakamaError):
    """The caller sent something we cannot accept (bad name, malformed event)."""


class InvalidEvent(InvalidInput):
    """A webhook body that does not match the expected schema."""


class Unauthorized(NakamaError):
    """Missing or wrong credentials."""


class Forbidden(Unauthorized):
    """Valid credentials, but not allowed to do this (e.g. a non-admin managing users)."""


class NotFound(NakamaError):
    """The named thing does not exist."""


class Conflict(NakamaError):
    """The request clashes with existing state (e.g. a name already taken)."""


class QuotaExceeded(Conflict):
    """One user holds as much of something as a user may (projects, running apps, environments,
    disk); the message names the quota, what the user holds and the setting. A conflict with
    what the user holds now, which they can resolve (delete a project, stop an app)."""


class RateLimited(NakamaError):
    """Too many failed attempts from one client address (wrong tokens, wrong passwords): it may
    try again after ``retry_after_s`` seconds (the answer's Retry-After)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TemporaryError(NakamaError):
    """Worth retrying later: an unreachable service, a timeout."""


class PermanentError(NakamaError):
    """Retrying will not help: a failed build, a rejected request."""
