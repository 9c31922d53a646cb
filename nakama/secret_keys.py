"""Where the keys that encrypt secret variables are kept: outside the database.

``NAKAMA_SECRETS_KEY`` (comma-separated, newest first) when it is set; otherwise the key file
``<data_dir>/secrets.key`` (one key a line, newest first, mode 0600), made at first start. The
key file is only ever replaced whole (a new file renamed over it), so an interrupted write
leaves the old one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from nakama.secretbox import SecretBox, generate_key, parse_keys
from nakama.settings import Settings

KEY_FILE_NAME = "secrets.key"
SETTING = "NAKAMA_SECRETS_KEY"


@dataclass(frozen=True)
class SecretKeys:
    """The keys in use, newest first, and where they come from."""

    keys: tuple[str, ...] = field(repr=False)
    # The key file they were read from; None: from NAKAMA_SECRETS_KEY, which Nakama cannot change.
    file: Path | None

    @property
    def source(self) -> str:
        """What an error names: the setting or the file, never a key."""
        return SETTING if self.file is None else _file_source(self.file)

    def box(self) -> SecretBox:
        return SecretBox(self.keys, source=self.source)


def key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE_NAME


def load_keys(settings: Settings) -> SecretKeys:
    """The keys from ``NAKAMA_SECRETS_KEY``, else from the key file, made now if it is missing."""
    if settings.secrets_key is not None:
        text = settings.secrets_key.get_secret_value()
        return SecretKeys(parse_keys(text, source=SETTING), file=None)
    path = key_file(settings)
    if not path.exists():
        _create(path, (generate_key(),))
    return SecretKeys(parse_keys(path.read_text(), source=_file_source(path)), file=path)


def _file_source(path: Path) -> str:
    return f"the key file {path}"


def write_key_file(path: Path, keys: tuple[str, ...]) -> None:
    """Replace the key file with ``keys`` (newest first) in one rename: a reader sees the old
    file or the new one, never a part."""
    tmp = _written(path, keys)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _create(path: Path, keys: tuple[str, ...]) -> None:
    """Make the key file unless another process just did (then that one's keys count)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _written(path, keys)
    try:
        os.link(tmp, path)  # fails if the file exists: never replaces a key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)


def _written(path: Path, keys: tuple[str, ...]) -> Path:
    """A new file beside ``path`` (mode 0600) holding ``keys``, flushed to disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(k + "\n" for k in keys))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
