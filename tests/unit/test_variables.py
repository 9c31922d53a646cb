"""nakama.variables: which names and values an app's variables may have, and how they are shown.

Also that the reserved names are the ones the runtimes really set: the local supervisor's
environment and the app container of the rendered Deployment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.local.supervisor import app_environment
from flux.manifests import AppProject, render_manifests
from nakama.errors import InvalidInput
from nakama.models import VariablePublic, VariableSet
from nakama.settings import FluxSettings, HarborSettings
from nakama.variables import (
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    RESERVED_NAMES,
    check_total,
    preview,
    public,
    redact,
    validate_key,
    validate_value,
)

WHEN = datetime(2026, 12, 12, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "key", ["API_URL", "a", "_private", "x1", "Mixed_Case_9", "K" * 100, "nakama", "PORTS"]
)
def test_good_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "give a name"),
        ("K" * 101, "101 characters, at most 100"),
        ("1ABC", "not starting with a digit"),
        ("API-URL", "only letters, digits and '_'"),
        ("A B", "only letters, digits and '_'"),
        ("ÄPFEL", "only letters, digits and '_'"),
        ("A=B", "only letters, digits and '_'"),
        ("NAKAMA_TOKEN", "starting with NAKAMA_ are Nakama's own"),
        ("nakama_x", "starting with NAKAMA_ are Nakama's own"),
        ("PORT", "Nakama sets it for the app"),
        ("PATH", "Nakama sets it for the app"),
        ("HOME", "Nakama sets it for the app"),
        ("VIRTUAL_ENV", "Nakama sets it for the app"),
        ("PYTHONUNBUFFERED", "Nakama sets it for the app"),
    ],
)
def test_bad_keys_say_why(key: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_key(key)
    assert words in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("value", ["", "x", "ünïcödé ✓", "line\nbreak", "a" * MAX_VALUE_BYTES])
def test_good_values(value: str) -> None:
    assert validate_value("K", value) == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("s3cr3t-" + "a" * MAX_VALUE_BYTES, f"at most {MAX_VALUE_BYTES}"),
        ("s3cr3t-" + "é" * (MAX_VALUE_BYTES // 2), "bytes, at most"),  # 2 bytes each in UTF-8
        ("s3cr3t-\x00-tail", "NUL"),
        ("s3cr3t-\ud800-tail", "not valid Unicode"),
    ],
)
def test_bad_values_say_why_without_the_value(value: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_value("API_KEY", value)
    message = str(caught.value)
    assert words in message and "'API_KEY'" in message
    assert "s3cr3t" not in message


def test_all_variables_of_a_project_together_are_bounded() -> None:
    check_total({"A": "x" * MAX_VALUE_BYTES, "B": "y" * MAX_VALUE_BYTES})
    many = {f"K{i}": "s3cr3t" * 5000 for i in range(10)}  # 300,000 bytes
    with pytest.raises(InvalidInput, match=f"at most {MAX_TOTAL_BYTES}") as caught:
        check_total(many)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("", None),
        ("short", None),
        ("elevenchars", None),  # 11
        ("twelve-chars", "…rs"),  # 12
        ("sk-live-0123456789abcdef3f", "…3f"),
    ],
)
def test_preview_shows_the_last_two_characters_of_long_secrets_only(
    value: str, shown: str | None
) -> None:
    assert preview(value) == shown


@pytest.mark.parametrize(
    ("value", "secret", "expected"),
    [
        ("https://api.example", False, {"value": "https://api.example", "preview": None}),
        ("", False, {"value": "", "preview": None}),
        ("sk-live-0123456789abcdef3f", True, {"value": None, "preview": "…3f"}),
        ("hunter2", True, {"value": None, "preview": None}),
    ],
)
def test_public_hides_secrets(value: str, secret: bool, expected: dict[str, Any]) -> None:
    shown = public(key="K", value=value, secret=secret, updated_at=WHEN)
    assert isinstance(shown, VariablePublic)
    assert shown.model_dump() == {"key": "K", "secret": secret, "updated_at": WHEN, **expected}
    if secret:
        assert value not in shown.model_dump_json()


def test_redact_replaces_every_secret_longest_first() -> None:
    text = "app crashed: token=abcdef123456 and abc; again abcdef123456"
    assert redact(text, ["abc", "abcdef123456", ""]) == (
        "app crashed: token=[REDACTED] and [REDACTED]; again [REDACTED]"
    )
    assert redact("nothing here", []) == "nothing here"


def test_variable_set_forbids_unknown_fields() -> None:
    assert VariableSet.model_validate({"value": "v"}).secret is False
    assert VariableSet.model_validate({"value": "v", "secret": True}).secret is True
    with pytest.raises(ValueError, match="Extra inputs"):
        VariableSet.model_validate({"value": "v", "secrett": True})


def test_reserved_names_cover_what_the_local_supervisor_sets(tmp_path: Path) -> None:
    env = app_environment({}, port=8600, bin_dir=tmp_path / "venv" / "bin")
    inherited = {"HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME"}
    ours = {k for k in env if k not in inherited and not k.startswith("LC_")}
    assert ours <= RESERVED_NAMES
    assert {"PORT", "PATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED"} <= ours
    # An app's own variables come before ours: a reserved name could not win anyway.
    assert app_environment({"PORT": "1"}, port=8600, bin_dir=None)["PORT"] == "8600"


def test_reserved_names_cover_what_the_app_container_sets() -> None:
    docs = render_manifests(
        AppProject(name="demo", repo_url="https://gitlab.example.com/nakama-apps/demo.git"),
        FluxSettings(),
        harbor=HarborSettings(),
        namespace="nakama-apps",
    )
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in app["env"]} <= RESERVED_NAMES
    assert app["envFrom"] == [{"secretRef": {"name": "demo-env", "optional": True}}]
