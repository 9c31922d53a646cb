"""nakama.secretbox: secret variables encrypted with the newest key, decrypted with any, and
errors that name where the keys come from but never a value or a key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from nakama.secretbox import (
    PREFIX,
    SecretBox,
    SecretsKeyError,
    generate_key,
    is_encrypted,
    parse_keys,
)

OLD, NEW, OTHER = generate_key(), generate_key(), generate_key()
VALUE = "sk-live-0123456789abcdef-ünï ✓\nsecond line"


def test_a_value_is_stored_marked_and_unreadable_and_comes_back_whole() -> None:
    box = SecretBox([NEW], source="NAKAMA_SECRETS_KEY")
    stored = box.encrypt(VALUE)
    assert stored.startswith(PREFIX) and is_encrypted(stored)
    assert "sk-live" not in stored and "0123456789" not in stored
    assert box.encrypt(VALUE) != stored  # a fresh IV each time
    assert box.decrypt(stored) == VALUE
    assert box.decrypt(box.encrypt("")) == ""


def test_the_newest_key_encrypts_and_any_key_decrypts() -> None:
    old_box = SecretBox([OLD], source="s")
    both = SecretBox([NEW, OLD], source="s")
    under_old = old_box.encrypt(VALUE)
    assert both.decrypt(under_old) == VALUE
    under_new = both.encrypt(VALUE)
    assert SecretBox([NEW], source="s").decrypt(under_new) == VALUE
    with pytest.raises(SecretsKeyError):
        old_box.decrypt(under_new)
    assert both.uses_first_key(under_new) and not both.uses_first_key(under_old)


def test_rotate_moves_a_value_to_the_first_key_and_encrypts_a_plain_one() -> None:
    both = SecretBox([NEW, OLD], source="s")
    rotated = both.rotate(SecretBox([OLD], source="s").encrypt(VALUE))
    assert SecretBox([NEW], source="s").decrypt(rotated) == VALUE
    from_plain = both.rotate(VALUE)  # written by a Nakama from before encryption at rest
    assert is_encrypted(from_plain) and both.uses_first_key(from_plain)
    assert both.decrypt(from_plain) == VALUE


def test_an_unmarked_value_is_taken_as_plain() -> None:
    assert SecretBox([NEW], source="s").decrypt("plain-from-before") == "plain-from-before"
    assert not is_encrypted("gAAAAAB-a-token-without-the-mark")


@pytest.mark.parametrize(
    "stored",
    [
        SecretBox([OTHER], source="s").encrypt(VALUE),  # another key
        PREFIX + "not-a-token",
        PREFIX + Fernet(OTHER).encrypt(b"\xff\xfe").decode(),  # no UTF-8, and another key
        PREFIX + "ü",
    ],
)
def test_a_value_no_key_opens_is_a_clear_error_without_it(stored: str) -> None:
    box = SecretBox([NEW, OLD], source="NAKAMA_SECRETS_KEY")
    for attempt in (box.decrypt, box.rotate):
        with pytest.raises(SecretsKeyError) as caught:
            attempt(stored, what="the secret variable 'TOKEN' of project 'demo'")
        message = str(caught.value)
        assert "'TOKEN' of project 'demo'" in message and "NAKAMA_SECRETS_KEY" in message
        assert "cannot be decrypted with any key" in message
        for hidden in (VALUE, "sk-live", NEW, OLD, OTHER, stored[len(PREFIX) :]):
            assert hidden not in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (NEW, (NEW,)),
        (f"{NEW},{OLD}", (NEW, OLD)),
        (f" {NEW} , {OLD} ,", (NEW, OLD)),
        (f"{NEW}\n{OLD}\n", (NEW, OLD)),
    ],
)
def test_keys_are_comma_or_line_separated_newest_first(text: str, keys: tuple[str, ...]) -> None:
    assert parse_keys(text, source="s") == keys


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "holds no key"),
        (" ,\n", "holds no key"),
        ("hunter2-not-a-key", "key 1 of NAKAMA_SECRETS_KEY is not a Fernet key"),
        (f"{NEW},hunter2-not-a-key", "key 2 of NAKAMA_SECRETS_KEY is not a Fernet key"),
        (NEW[:-2], "key 1 of NAKAMA_SECRETS_KEY is not a Fernet key"),
    ],
)
def test_bad_keys_say_which_without_showing_it(text: str, words: str) -> None:
    with pytest.raises(SecretsKeyError) as caught:
        parse_keys(text, source="NAKAMA_SECRETS_KEY")
    message = str(caught.value)
    assert words in message
    assert "hunter2" not in message and NEW not in message and NEW[:-2] not in message


def test_a_box_never_shows_its_keys() -> None:
    box = SecretBox([NEW, OLD], source="the key file /data/secrets.key")
    assert NEW not in repr(box) and OLD not in repr(box)
    assert "2" in repr(box)
    with pytest.raises(SecretsKeyError, match="holds no key"):
        SecretBox([], source="s")


def test_generated_keys_are_fernet_keys_and_differ() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert parse_keys(key, source="s") == (key,)
