"""The one table from Nakama's errors to HTTP statuses, for the API and the web pages."""

from __future__ import annotations

from nakama.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NakamaError,
    NotFound,
    PermanentError,
    QuotaExceeded,
    RateLimited,
    TemporaryError,
    Unauthorized,
)

STATUS: dict[type[NakamaError], int] = {
    InvalidInput: 422,
    Forbidden: 403,  # before Unauthorized, its base class: the first match wins
    Unauthorized: 401,
    NotFound: 404,
    # 409, not 403: the caller may do this in general, and the request clashes with what they
    # hold now, which they can change (RFC 9110 15.5.10: "the user might be able to resolve the
    # conflict and resubmit"); 403 would say the act itself is not theirs to do.
    QuotaExceeded: 409,
    Conflict: 409,
    RateLimited: 429,
    TemporaryError: 503,
    PermanentError: 502,
}


def status_of(exc: NakamaError) -> int:
    """The HTTP status for ``exc``; 500 for an error of no known kind."""
    for kind, status in STATUS.items():
        if isinstance(exc, kind):
            return status
    return 500
