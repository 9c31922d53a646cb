"""Rules for a project's environment variables, and how they are shown: pure functions.

A variable's value may be a secret. Nothing here puts a value into a message: errors name the
key and the rule, and a secret is shown only as its last two characters, and only when it is
long enough for those to give nothing away.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from nakama.errors import InvalidInput
from nakama.models import VariablePublic

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_KEY_CHARS = 100
# A value's size in UTF-8 bytes: room for a certificate or a service-account JSON key.
MAX_VALUE_BYTES = 32 * 1024
# All of a project's keys and values together: well inside a Kubernetes Secret (1 MiB) and a
# process environment (Linux: a quarter of the stack limit, usually 2 MiB, shared with argv).
MAX_TOTAL_BYTES = 256 * 1024
RESERVED_PREFIX = "NAKAMA_"
# The names the runtimes set for the app themselves (backend.local.supervisor.app_environment;
# the app container's ``env`` in flux.manifests): an app author's value would be ignored or break
# the app. The tests check both runtimes against this list.
RESERVED_NAMES = frozenset({"PORT", "HOME", "PATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "DATA_DIR"})
# A secret at least this long shows its last 2 characters; a shorter one shows nothing.
PREVIEW_MIN_CHARS = 12
PREVIEW_CHARS = 2
REDACTED = "[REDACTED]"


def validate_key(key: str) -> str:
    """``key`` if it may name an app's variable, else :class:`InvalidInput` saying why."""
    shown = repr(key[:MAX_KEY_CHARS]) + ("…" if len(key) > MAX_KEY_CHARS else "")
    if not key:
        raise InvalidInput("invalid variable name '': give a name such as 'API_URL'")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(
            f"invalid variable name {shown}: {len(key)} characters, at most {MAX_KEY_CHARS}"
        )
    if not KEY_PATTERN.match(key):
        raise InvalidInput(
            f"invalid variable name {shown}: only letters, digits and '_', "
            "not starting with a digit (such as 'API_URL')"
        )
    if key.upper().startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"invalid variable name {shown}: names starting with {RESERVED_PREFIX} are Nakama's own"
        )
    if key in RESERVED_NAMES:
        raise InvalidInput(
            f"invalid variable name {shown}: Nakama sets it for the app "
            f"(reserved: {', '.join(sorted(RESERVED_NAMES))})"
        )
    return key


def validate_value(key: str, value: str) -> str:
    """``value`` if the variable ``key`` may hold it; the message never holds the value."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no process could get it
        raise InvalidInput(f"value of {key!r} is not valid Unicode text") from None
    if size > MAX_VALUE_BYTES:
        raise InvalidInput(
            f"value of {key!r} is {size} bytes, at most {MAX_VALUE_BYTES} (32 KiB) are allowed"
        )
    if "\x00" in value:
        raise InvalidInput(f"value of {key!r} contains a NUL character, which no variable can hold")
    return value


def check_total(variables: Mapping[str, str]) -> None:
    """InvalidInput if all of a project's variables together are too large for an app."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > MAX_TOTAL_BYTES:
        raise InvalidInput(
            f"the project's variables would take {size} bytes, at most {MAX_TOTAL_BYTES} "
            "(256 KiB) are allowed in all"
        )


def preview(value: str) -> str | None:
    """What a secret shows of itself: ``"…3f"`` for a long one, else nothing."""
    if len(value) < PREVIEW_MIN_CHARS:
        return None
    return "…" + value[-PREVIEW_CHARS:]


def public(*, key: str, value: str, secret: bool, updated_at: datetime) -> VariablePublic:
    """A variable as the API and the web UI show it: a secret without its value."""
    return VariablePublic(
        key=key,
        secret=secret,
        value=None if secret else value,
        preview=preview(value) if secret else None,
        updated_at=updated_at,
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value in it replaced (longest first, so none shows in part)."""
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
