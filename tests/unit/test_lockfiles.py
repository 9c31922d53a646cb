"""Which file a build installs from, lock files made into pinned requirements (from lock files the
real tools wrote: tests/data/lockfiles/), and packages.txt's names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from image_builder.lockfiles import (
    InstallSource,
    LockFileError,
    choose_source,
    count_requirements,
    pipfile_requirements,
    poetry_requirements,
    uv_export_args,
)
from image_builder.system_packages import local_mode_note, package_names, read_packages
from nakama.errors import InvalidInput

DATA = Path(__file__).resolve().parent.parent / "data" / "lockfiles"
SIX_WHEEL = "sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"
SIX_SDIST = "sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81"


@pytest.mark.parametrize(
    ("paths", "source"),
    [
        (["uv.lock", "poetry.lock", "Pipfile.lock", "requirements.txt", "pyproject.toml"],
         InstallSource("uv.lock", ("poetry.lock", "Pipfile.lock", "requirements.txt"))),
        (["poetry.lock", "pyproject.toml"], InstallSource("poetry.lock")),
        (["Pipfile.lock", "requirements.txt", "pyproject.toml"],
         InstallSource("Pipfile.lock", ("requirements.txt", "pyproject.toml"))),
        (["requirements.txt", "pyproject.toml"],
         InstallSource("requirements.txt", ("pyproject.toml",))),
        (["pyproject.toml", "app.py"], InstallSource("pyproject.toml")),
        (["app.py", "lib/uv.lock", "Pipfile"], None),  # only the root counts; a Pipfile alone
    ],
)  # fmt: skip
def test_choose_source_by_precedence(paths: list[str], source: InstallSource | None) -> None:
    assert choose_source(paths) == source


def test_describe_names_the_file_and_what_was_not_used() -> None:
    line = choose_source(["uv.lock", "requirements.txt", "pyproject.toml"]).describe()  # type: ignore[union-attr]
    assert line.startswith("installing the Python dependencies from uv.lock (uv export --frozen")
    assert line.endswith("; not used: requirements.txt (uv.lock comes first)")


def test_uv_export_is_frozen_without_dev_or_workspace_packages() -> None:
    args = uv_export_args(project_dir="/src", output="/env/req.txt")
    assert args[0] == "export"
    assert {"--frozen", "--no-dev", "--no-emit-workspace"} <= set(args)
    assert args[args.index("--project") + 1] == "/src"
    assert args[args.index("--output-file") + 1] == "/env/req.txt"


def test_poetry_lock_main_group_with_hashes_and_markers() -> None:
    text = poetry_requirements((DATA / "poetry" / "poetry.lock").read_bytes())
    assert f"six==1.17.0 \\\n    --hash={SIX_WHEEL} \\\n    --hash={SIX_SDIST}\n" in text
    assert 'colorama==0.4.6 ; sys_platform == "win32" \\\n' in text
    assert 'tomli==2.5.0 ; python_version < "3.11" \\\n' in text
    assert "python-dateutil==2.9.0.post0 \\\n" in text
    assert "pyflakes" not in text  # the dev group
    assert count_requirements(text) == 4
    assert "--index-url" not in text  # PyPI: the operator's index stands in for it


def test_pipfile_lock_default_section_with_hashes_and_markers() -> None:
    text = pipfile_requirements((DATA / "pipenv" / "Pipfile.lock").read_bytes())
    assert "six==1.17.0 ; python_version >= '2.7'" in text
    assert f"--hash={SIX_WHEEL}" in text and f"--hash={SIX_SDIST}" in text
    assert "tomli==2.2.1 ; python_version < '3.11' \\\n" in text
    assert "pyflakes" not in text  # the develop section
    assert count_requirements(text) == 3


def test_a_poetry_1_lock_is_refused_with_the_way_out() -> None:
    with pytest.raises(LockFileError, match=r"^poetry\.lock: lock-version 2\.0 \(Poetry 1\)"):
        poetry_requirements((DATA / "poetry-1.8" / "poetry.lock").read_bytes())


def _poetry(package: str, lock_version: str = "2.1") -> bytes:
    return f'{package}\n[metadata]\nlock-version = "{lock_version}"\n'.encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[[package]]\nname = "six\n', "poetry.lock: Illegal character '\\n' (at line 2, column"),
        (b"[[package]]\nname = 1\n", "no [metadata] lock-version"),
        (_poetry('[[package]]\nversion = "1"\ngroups = ["main"]\n'), "#1 has no 'name'"),
        (_poetry('[[package]]\nname = "six"\ngroups = ["main"]\n'), "package 'six' has no 'ver"),
        (_poetry('[[package]]\nname = "app"\nversion = "1"\ngroups = ["main"]\n'
                 '[package.source]\ntype = "git"\nurl = "https://example.com/a.git"\n'),
         "package 'app' comes from a git source (https://example.com/a.git)"),
        (_poetry('[[package]]\nname = "lib"\nversion = "1"\ngroups = ["main"]\n'
                 '[package.source]\ntype = "directory"\nurl = "../lib"\n'),
         "package 'lib' comes from a directory source, which a build cannot install"),
        (_poetry('[[package]]\nname = "six\\n--index-url http://evil"\nversion = "1"\n'
                 'groups = ["main"]\n'), "is not a package name"),
        (_poetry('[[package]]\nname = "six"\nversion = "1 --pre"\ngroups = ["main"]\n'),
         "'1 --pre' is not a version"),
        (_poetry('[[package]]\nname = "six"\nversion = "1"\ngroups = ["main"]\n'
                 'markers = "python_version > \\"3\\"\\n--index-url x"\n'), "is not one line"),
        (_poetry('[[package]]\nname = "six"\nversion = "1"\ngroups = ["main"]\n'
                 'files = [{file = "x.whl", hash = "md5 oops"}]\n'), "not of the form sha256"),
    ],
)  # fmt: skip
def test_a_poetry_lock_that_cannot_be_installed_is_named(content: bytes, message: str) -> None:
    with pytest.raises(LockFileError) as failed:
        poetry_requirements(content)
    assert message in str(failed.value)
    assert str(failed.value).startswith("poetry.lock")


def test_a_private_poetry_source_becomes_an_extra_index() -> None:
    package = (
        '[[package]]\nname = "corp"\nversion = "2"\ngroups = ["main"]\n'
        '[package.source]\ntype = "legacy"\nurl = "https://pypi.corp.example/simple"\n'
    )
    text = poetry_requirements(_poetry(package))
    assert text == "--extra-index-url https://pypi.corp.example/simple\ncorp==2\n"


def _pipfile(default: object, sources: object = None) -> bytes:
    meta = {"sources": sources or [{"name": "pypi", "url": "https://pypi.org/simple"}]}
    return json.dumps({"_meta": meta, "default": default}).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{\n  "default": {\n    "six": {,}\n  }\n}\n',
         "Pipfile.lock: Expecting property name enclosed in double quotes (at line 3, column"),
        (b'{"develop": {}}', 'no "default" section'),
        (_pipfile({"six": {"hashes": []}}), 'default.six.version must be a pinned version'),
        (_pipfile({"six": {"version": ">=1"}}), "default.six.version must be a pinned"),
        (_pipfile({"app": {"git": "https://example.com/a.git", "ref": "abc"}}),
         "default.app is a git dependency"),
        (_pipfile({"lib": {"path": "./lib", "editable": True}}), "default.lib is a path depend"),
        (_pipfile({"six": {"version": "==1", "index": "corp"}}), "names 'corp', which _meta"),
        (_pipfile({"six": {"version": "==1", "extras": ["a b"]}}), "extras must be a list"),
        (_pipfile({"six --pre": {"version": "==1"}}), "'six --pre' is not a package name"),
    ],
)  # fmt: skip
def test_a_pipfile_lock_that_cannot_be_installed_is_named(content: bytes, message: str) -> None:
    with pytest.raises(LockFileError) as failed:
        pipfile_requirements(content)
    assert message in str(failed.value)
    assert str(failed.value).startswith("Pipfile.lock")


def test_pipfile_extras_and_a_private_index() -> None:
    sources = [{"name": "pypi", "url": "https://pypi.org/simple"},
               {"name": "corp", "url": "https://pypi.corp.example/simple"}]  # fmt: skip
    entry = {"version": "==2.32.0", "extras": ["socks"], "index": "corp", "hashes": [SIX_WHEEL]}
    text = pipfile_requirements(_pipfile({"req": entry}, sources))
    assert text == (
        "--extra-index-url https://pypi.corp.example/simple\n"
        f"req[socks]==2.32.0 \\\n    --hash={SIX_WHEEL}\n"
    )


def test_packages_txt_names() -> None:
    text = "# system packages\nlibgl1\n\nffmpeg   # video\nlibgl1\r\ng++ libpq5\n"
    assert package_names(text) == ("libgl1", "ffmpeg", "g++", "libpq5")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("libgl1\nffmpeg; rm -rf /\n", "packages.txt:2: 'ffmpeg;'"),
        ("-o\n", "packages.txt:1: '-o'"),
        ("ok\n\nLibGL\n", "packages.txt:3: 'LibGL'"),
        ("x\n", "packages.txt:1: 'x'"),  # Debian names have two characters at least
        ("$(curl)\n", "packages.txt:1: '$(curl)'"),
    ],
)
def test_packages_txt_refuses_what_is_not_a_package_name(text: str, line: str) -> None:
    with pytest.raises(InvalidInput) as failed:
        package_names(text)
    assert str(failed.value).startswith(f"{line} is not a Debian package name")


def test_local_mode_note_lists_the_packages() -> None:
    note = local_mode_note("libgl1\nffmpeg\n")
    assert note is not None
    assert note.startswith(
        "packages.txt lists libgl1, ffmpeg: system packages are not installed in local mode; "
    )
    assert local_mode_note("# nothing\n\n") is None
    assert read_packages("a;b\n").problems == ("packages.txt:1: 'a;b'",)
