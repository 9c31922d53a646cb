"""Encryption of secret variables at rest, with Fernet (AES-128-CBC and HMAC-SHA256).

The database holds ``fernet:<token>`` for every secret variable, so that a copy of the database
(a backup, a dump, a stolen disk) gives no secret away without the key, which is kept apart from
it (:mod:`nakama.secret_keys`). Several keys may be in use, newest first: a value is encrypted
with the newest and decrypted with whichever fits, so a key can be replaced without a gap.

Nothing here puts a value or a key into a message: errors name where the keys come from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from nakama.errors import NakamaError

# Marks a stored value as encrypted; the rest is the Fernet token (URL-safe base64).
PREFIX = "fernet:"
# Keys are separated by commas (NAKAMA_SECRETS_KEY) or line breaks (the key file).
_SEPARATORS = re.compile(r"[,\s]+")


class SecretsKeyError(NakamaError):
    """The keys are unusable, or a stored secret cannot be decrypted with any of them."""


def generate_key() -> str:
    """A new random key (32 bytes, URL-safe base64), for the front of the key list."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(text: str, *, source: str) -> tuple[str, ...]:
    """The keys in ``text`` (comma- or line-separated, newest first); :class:`SecretsKeyError`
    naming ``source`` if there is none or one is not a key."""
    keys = tuple(k for k in _SEPARATORS.split(text) if k)
    if not keys:
        raise SecretsKeyError(f"{source} holds no key")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # Not chained: the cause's message may quote the key.
            raise SecretsKeyError(
                f"key {position} of {source} is not a Fernet key "
                "(32 bytes in URL-safe base64, as `nakama secrets rotate-key` makes them)"
            ) from None
    return keys


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


class SecretBox:
    """Encrypts with the first of ``keys`` and decrypts with any of them."""

    def __init__(self, keys: Sequence[str], *, source: str) -> None:
        if not keys:
            raise SecretsKeyError(f"{source} holds no key")
        self.source = source
        self.key_count = len(keys)
        self._first = Fernet(keys[0])
        self._all = MultiFernet([Fernet(k) for k in keys])

    def __repr__(self) -> str:
        return f"SecretBox(source={self.source!r}, keys={self.key_count})"

    def encrypt(self, value: str) -> str:
        """``value`` as it is stored: ``fernet:`` and the token."""
        return PREFIX + self._all.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str, *, what: str = "a secret variable") -> str:
        """The value of a stored secret. One without the mark is returned as it is: only a
        Nakama from before encryption at rest (migration 0007) writes those."""
        if not is_encrypted(stored):
            return stored
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise self._undecryptable(what) from None

    def rotate(self, stored: str, *, what: str = "a secret variable") -> str:
        """``stored`` encrypted with the first key (and encrypted at all, if it was not)."""
        if not is_encrypted(stored):
            return self.encrypt(stored)
        try:
            token = self._all.rotate(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise self._undecryptable(what) from None
        return PREFIX + token.decode("ascii")

    def uses_first_key(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted with the first key (so older keys may go)."""
        if not is_encrypted(stored):
            return False
        try:
            self._first.decrypt(stored[len(PREFIX) :].encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def _undecryptable(self, what: str) -> SecretsKeyError:
        return SecretsKeyError(
            f"{what} cannot be decrypted with any key in {self.source}: the key is wrong, or the "
            "one it was encrypted with was removed. Give the key it was encrypted with (the "
            "key file, or NAKAMA_SECRETS_KEY, comma-separated, newest first)"
        )
