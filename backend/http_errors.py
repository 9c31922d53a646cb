"""The one table from Nakama's errors to HTTP statuses, for the API and the web pages, and the
words a refused request body is answered with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


# What pydantic puts before the message of an error a validator raised (ValueError, assert).
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")
# Validation problems one answer names at most.
MAX_PROBLEMS = 5


def validation_problem(error: Mapping[str, Any]) -> str:
    """One validation error in the server's own words, never with the input: a validator's
    sentence as Nakama wrote it (it names what it is about), else pydantic's message after
    where it is (``body.role: Field required``)."""
    message = str(error.get("msg", ""))
    for prefix in _VALIDATOR_PREFIXES:
        if message.startswith(prefix):
            return message.removeprefix(prefix)
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {message}" if where else message


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """The first :data:`MAX_PROBLEMS` validation errors, ``; `` between them."""
    return "; ".join(validation_problem(error) for error in errors[:MAX_PROBLEMS])
