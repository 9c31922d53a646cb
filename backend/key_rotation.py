"""Replacing the key of secret variables (``nakama secrets rotate-key [--drop-old]``).

Safe when interrupted at any point, because a key leaves only after every value is under the
newest one: the key file gets the new key in front of the old ones (one rename), then every
secret is re-encrypted with it in one transaction; ``--drop-old`` re-encrypts with the newest
key again (in case a value was written under an older one since) and only after that commit
rewrites the file with the newest key alone. With ``NAKAMA_SECRETS_KEY`` Nakama cannot change
the keys: it makes a new one for the operator to put in front, and re-encrypts once it is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backend.variables import reencrypt_secrets
from nakama.db.session import Database
from nakama.secret_keys import SecretKeys, load_keys, write_key_file
from nakama.secretbox import generate_key
from nakama.settings import Settings


@dataclass(frozen=True)
class Rotation:
    """What a rotation did."""

    # Secret variables now encrypted with the first key.
    reencrypted: int
    # The key file that holds the keys now; None: they come from NAKAMA_SECRETS_KEY.
    key_file: Path | None
    # How many keys the file holds now, or NAKAMA_SECRETS_KEY held.
    keys: int
    # NAKAMA_SECRETS_KEY held one key: a new one for the operator to put in front of it
    # (nothing was re-encrypted).
    new_key: str | None = field(default=None, repr=False)


def rotate_key(settings: Settings) -> Rotation:
    """A new key in front of the old ones, and every secret re-encrypted with it."""
    keys = load_keys(settings)
    db = _database(settings, keys)
    try:
        if keys.file is None:
            if len(keys.keys) == 1:
                return Rotation(reencrypted=0, key_file=None, keys=1, new_key=generate_key())
            count = reencrypt_secrets(db, keys.box())
            return Rotation(reencrypted=count, key_file=None, keys=len(keys.keys))
        rotated = SecretKeys((generate_key(), *keys.keys), file=keys.file)
        write_key_file(keys.file, rotated.keys)  # the old keys stay until --drop-old
        count = reencrypt_secrets(db, rotated.box())
        return Rotation(reencrypted=count, key_file=keys.file, keys=len(rotated.keys))
    finally:
        db.dispose()


def drop_old_keys(settings: Settings) -> Rotation:
    """Every secret re-encrypted with the first key, then (key file) the others removed."""
    keys = load_keys(settings)
    db = _database(settings, keys)
    try:
        count = reencrypt_secrets(db, keys.box())
    finally:
        db.dispose()
    if keys.file is None:
        return Rotation(reencrypted=count, key_file=None, keys=len(keys.keys))
    if len(keys.keys) > 1:
        write_key_file(keys.file, keys.keys[:1])
    return Rotation(reencrypted=count, key_file=keys.file, keys=1)


def _database(settings: Settings, keys: SecretKeys) -> Database:
    """The database at the newest schema (so every secret is encrypted before it is rotated)."""
    db = Database(settings.db_url)
    try:
        db.migrate(secrets=keys.box())
    except BaseException:
        db.dispose()
        raise
    return db
