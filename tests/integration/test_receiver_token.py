"""The Receiver's HMAC key is the Secret's ``token`` bytes as they are, and ``nakama build``
signs with its File variable trimmed: the two agree for a Secret made as the guide says.

notification-controller's generic-hmac handler reads ``secret.Data["token"]`` and validates
``X-Signature`` with it untrimmed (review D16, ``receiver_handlers.go:249``). ``nakama build``
reads NAKAMA_FLUX_RECEIVER_TOKEN_FILE with surrounding whitespace stripped (a File variable
often ends in a newline). So the Secret must hold the token without a newline: ``kubectl create
secret generic --from-literal=token="$(...)"`` (the guide's command; ``$(...)`` drops trailing
newlines); ``--from-file`` of a file ending in a newline gives every ping a 400.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
from pathlib import Path

from image_builder.build import _read_secret
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "cluster-install.md"


def controller_accepts(secret_token: bytes, body: bytes, signature: str) -> bool:
    """generic-hmac's check: HMAC-SHA256 of the body keyed by the Secret's bytes, as is."""
    algorithm, _, digest = signature.partition("=")
    expected = hmac.new(secret_token, body, hashlib.sha256).hexdigest()
    return algorithm == "sha256" and hmac.compare_digest(expected, digest)


def build_signature(token_file: Path, body: bytes) -> str:
    """How ``nakama build`` signs its ping (image_builder/build.py ``_notify_flux``)."""
    token = _read_secret(token_file, "Flux receiver token")
    assert token is not None
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def guide_token_command() -> str:
    """The shell inside ``--from-literal=token="$(...)"`` of the guide's Receiver Secret."""
    text = GUIDE.read_text()
    match = re.search(
        r"create secret generic nakama-receiver-token \\\n\s+--from-literal=token=\"\$\((.+?)\)\"",
        text,
    )
    assert match, "the guide no longer shows how to make the Receiver's Secret"
    return match.group(1)


def test_a_secret_made_as_the_guide_says_verifies_nakama_builds_ping(tmp_path: Path) -> None:
    value = subprocess.run(
        ["/bin/sh", "-c", f'printf %s "$({guide_token_command()})"'],
        check=True,
        capture_output=True,
    ).stdout
    assert value and not value.endswith(b"\n")
    body = b'{"image": "harbor.test/nakama-apps/demo:main-0123abcd-20260821101530"}'
    for file_text in (value, value + b"\n"):  # the File variable, with or without a newline
        token_file = tmp_path / "token"
        token_file.write_bytes(file_text)
        assert controller_accepts(value, body, build_signature(token_file, body))


def test_a_secret_with_a_trailing_newline_refuses_every_ping(tmp_path: Path) -> None:
    """``--from-file`` of a file that ends in a newline: the key has the newline, the ping not."""
    token_file = tmp_path / "token"
    token_file.write_bytes(b"4f1c0ffee\n")
    body = b"{}"
    assert not controller_accepts(b"4f1c0ffee\n", body, build_signature(token_file, body))
    assert controller_accepts(b"4f1c0ffee", body, build_signature(token_file, body))
