"""What an import accepts and what it detects (nakama.importing): pure functions, table-driven."""

from __future__ import annotations

import base64

import pytest

from nakama.errors import InvalidInput
from nakama.importing import (
    BuildPolicy,
    ImportSource,
    check_main_file,
    detect,
    fetch_problem,
    parse_source_url,
    scrub,
    secret_forms,
    url_with_credentials,
)

LOCAL = BuildPolicy(default="3.11", default_from="the server's Python", reads_version_file=False)
CLUSTER = BuildPolicy(
    default="3.11",
    default_from="the base image python:3.11-slim",
    reads_version_file=True,
    dockerfile_decides=True,
)


@pytest.mark.parametrize(
    ("url", "clean", "username"),
    [
        ("https://github.com/acme/dash.git", "https://github.com/acme/dash.git", None),
        ("  https://GitLab.example.com/a/b  ", "https://gitlab.example.com/a/b", None),
        ("https://deploy@gl.example.com:8443/a.git", "https://gl.example.com:8443/a.git", "deploy"),
        ("http://127.0.0.1:9999/dash.git", "http://127.0.0.1:9999/dash.git", None),
        ("http://localhost/dash.git", "http://localhost/dash.git", None),
        ("http://[::1]:81/dash.git", "http://[::1]:81/dash.git", None),
    ],
)  # fmt: skip
def test_accepted_urls_lose_their_user_part(url: str, clean: str, username: str | None) -> None:
    parsed = parse_source_url(url)
    assert (parsed.url, parsed.username) == (clean, username)
    assert parsed.allowed_protocols == parsed.scheme


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        ("http://example.com/a.git", "http:// is allowed only for this machine"),
        ("http://10.0.0.1/a.git", "http:// is allowed only for this machine"),
        ("git@github.com:acme/dash.git", "SSH URLs"),
        ("ssh://git@github.com/acme/dash.git", "SSH URLs"),
        ("git+ssh://github.com/acme/dash.git", "SSH URLs"),
        ("file:///var/lib/nakama/git/other.git", "file:// URLs are not allowed"),
        ("/var/lib/nakama/git/other.git", "not a URL"),
        ("ext::sh", "transport helpers"),
        ("fd::3", "transport helpers"),
        ("ext::sh -c id", "spaces"),
        ("foo::https://github.com/a.git", "transport helpers"),
        ("git://github.com/a.git", "neither encrypted"),
        ("ftp://example.com/a.git", "only https://"),
        ("https://user:s3cret-token@github.com/a.git", "contains a password or token"),
        ("https://:s3cret-token@github.com/a.git", "contains a password or token"),
        ("https://github.com", "names no repository"),
        ("https://github.com/a.git?x=1", "query or fragment"),
        ("https://github.com:99999/a.git", "host or port"),
        ("https://github.com/a\n.git", "control characters"),
        ("https://" + "a" * 3000, "longer than"),
    ],
)
def test_refused_urls_say_why_without_repeating_the_url(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as caught:
        parse_source_url(url)
    assert "s3cret-token" not in str(caught.value)


def test_the_token_goes_into_the_url_only_for_gitlab() -> None:
    source = ImportSource(
        url=parse_source_url("https://gitlab.example.com/a/b.git"), token="t/k:n@1", username="me"
    )
    assert url_with_credentials(source) == "https://me:t%2Fk%3An%401@gitlab.example.com/a/b.git"
    assert "t/k:n@1" not in repr(source)
    public = ImportSource(url=parse_source_url("https://gitlab.example.com/a/b.git"))
    assert url_with_credentials(public) == "https://gitlab.example.com/a/b.git"


def test_scrub_removes_every_form_of_the_token() -> None:
    token = "glpat-abc/def+ghi="
    basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
    text = (
        f"fatal: https://oauth2:{token}@host/x.git refused; Authorization: Basic {basic}; "
        f"encoded glpat-abc%2Fdef%2Bghi%3D; raw {token}; https://someone:other@host/y"
    )
    out = scrub(text, secret_forms(token))
    for form in (token, basic, "glpat-abc%2Fdef%2Bghi%3D", "other@"):
        assert form not in out
    assert "https://***@host/y" in out


@pytest.mark.parametrize(
    ("message", "with_token", "says"),
    [
        ("fatal: Authentication failed for 'https://h/x.git/'", True, "refused the token"),
        ("fatal: Authentication failed for 'https://h/x.git/'", False, "needs credentials"),
        ("fatal: could not read Username for 'https://h': terminal prompts disabled", False,
         "needs credentials"),
        ("fatal: unable to access 'https://h/x.git/': The requested URL returned error: 403",
         True, "refused access (HTTP 403)"),
        ("fatal: repository 'https://h/x.git/' not found", False, "no git repository at"),
        ("fatal: unable to access '...': Could not resolve host: h", False, "cannot be resolved"),
        ("fatal: unable to access '...': Failed to connect to h", False, "cannot be reached"),
        ("fatal: unable to access '...': SSL certificate problem", False, "over TLS"),
        ("fatal: something else entirely", False, "could not be fetched: fatal: something else"),
    ],
)  # fmt: skip
def test_fetch_problems_are_explained(message: str, with_token: bool, says: str) -> None:
    assert says in fetch_problem(message, url="https://h/x.git", with_token=with_token)


@pytest.mark.parametrize(
    "path", ["app.py", "streamlit_app.py", "src/dashboard.py", "pages/1_Home.py", "a-b/c.d.py"]
)
def test_main_files_that_may_be_chosen(path: str) -> None:
    assert check_main_file(path) == path


@pytest.mark.parametrize(
    "path",
    ["/etc/x.py", "../x.py", "a/../x.py", "./x.py", "x.txt", "x", "x[1].py", "x*.py", "a b.py"],
)
def test_main_files_that_may_not_be_chosen(path: str) -> None:
    with pytest.raises(InvalidInput, match=r"relative path to a \.py file"):
        check_main_file(path)


def decide(files: dict[str, bytes], *, main: str | None = None, python: str | None = None,
           policy: BuildPolicy = LOCAL):  # type: ignore[no-untyped-def]  # fmt: skip
    return detect(
        files,
        branch="main",
        branch_from="the source's default branch (its HEAD)",
        chosen_main=main,
        chosen_python=python,
        builds=policy,
    )


def test_streamlit_app_is_preferred_and_app_py_noted() -> None:
    found = decide({"streamlit_app.py": b"", "app.py": b""})
    assert (found.main_file, found.main_file_from) == ("streamlit_app.py", "found at the root")
    assert found.recorded_main_file == "streamlit_app.py"
    assert any("app.py is at the root too" in note for note in found.notes)
    assert "main file: streamlit_app.py (found at the root)" in found.summary()


def test_app_py_needs_no_record() -> None:
    found = decide({"app.py": b""})
    assert (found.main_file, found.recorded_main_file) == ("app.py", None)


def test_a_chosen_main_file_must_exist() -> None:
    found = decide({"src/dash.py": b"", "app.py": b""}, main="src/dash.py")
    assert (found.main_file, found.main_file_from, found.recorded_main_file) == (
        "src/dash.py",
        "chosen",
        "src/dash.py",
    )
    with pytest.raises(InvalidInput, match=r"'src/gone\.py' is not in branch 'main'"):
        decide({"app.py": b""}, main="src/gone.py")


def test_no_main_file_is_a_clear_refusal() -> None:
    with pytest.raises(InvalidInput, match=r"no main file found: neither streamlit_app\.py"):
        decide({"main.py": b"", ".python-version": b"3.11\n"})


def test_nakama_toml_run_decides_and_nothing_is_recorded() -> None:
    toml = b'run = "python -m streamlit run src/home.py --server.port $PORT"\n'
    found = decide({"nakama.toml": toml, "app.py": b""})
    assert found.main_file == "src/home.py"
    assert found.main_file_from.startswith("nakama.toml's run command")
    assert found.recorded_main_file is None
    plain = decide({"nakama.toml": b'run = "python server.py"\n'})
    assert plain.main_file is None and plain.recorded_main_file is None
    with pytest.raises(InvalidInput, match="says how to run the app"):
        decide({"nakama.toml": toml}, main="app.py")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        decide({"nakama.toml": b"run = ", "app.py": b""})
    # A nakama.toml without a run command leaves the choice to detection.
    assert decide({"nakama.toml": b'health_path = "/h"\n', "app.py": b""}).main_file == "app.py"


@pytest.mark.parametrize(
    ("files", "chosen", "policy", "version", "from_"),
    [
        ({".python-version": b"3.12\n"}, None, CLUSTER, "3.12", "from .python-version"),
        ({".python-version": b"3.12.4"}, None, CLUSTER, "3.12", "from .python-version"),
        ({}, None, CLUSTER, "3.11", "the base image python:3.11-slim"),
        ({}, "3.11", CLUSTER, "3.11", "chosen; the builds agree (the base image "
         "python:3.11-slim)"),
        ({".python-version": b"3.12"}, "3.12", CLUSTER, "3.12", "chosen; the builds agree (from "
         ".python-version)"),
        ({".python-version": b"3.11"}, None, LOCAL, "3.11", "from .python-version, the same as the "
         "server's Python"),
        ({".python-version": b"3.12"}, None, LOCAL, "3.11", "the server's Python"),
        ({}, None, LOCAL, "3.11", "the server's Python"),
    ],
)  # fmt: skip
def test_python_version_is_what_the_builds_use(
    files: dict[str, bytes], chosen: str | None, policy: BuildPolicy, version: str, from_: str
) -> None:
    found = decide({"app.py": b"", **files}, python=chosen, policy=policy)
    assert (found.python_version, found.python_from) == (version, from_)


def test_local_builds_note_a_python_version_they_cannot_honour() -> None:
    found = decide({"app.py": b"", ".python-version": b"3.12"})
    assert any("asks for Python 3.12" in note for note in found.notes)
    odd = decide({"app.py": b"", ".python-version": b"pypy3.10"}, policy=CLUSTER)
    assert odd.python_version == "3.11" and any("not understood" in n for n in odd.notes)


@pytest.mark.parametrize(
    ("files", "chosen", "policy", "says"),
    [
        ({".python-version": b"3.11"}, "3.12", CLUSTER, "change .python-version"),
        ({}, "3.12", CLUSTER, "commit a .python-version with 3.12"),
        ({}, "3.12", LOCAL, "ask the operator"),
    ],
)
def test_a_chosen_python_the_builds_would_not_use_is_refused(
    files: dict[str, bytes], chosen: str, policy: BuildPolicy, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        decide({"app.py": b"", **files}, python=chosen, policy=policy)


def test_a_dockerfile_decides_where_builds_use_it() -> None:
    files = {"Dockerfile": b"FROM python:3.12\n", "streamlit_app.py": b""}
    found = decide(files, policy=CLUSTER)
    assert found.main_file is None and found.recorded_main_file is None
    assert found.main_file_from == "the repository's Dockerfile (its command runs the app)"
    with pytest.raises(InvalidInput, match="makes the image"):
        decide(files, main="streamlit_app.py", policy=CLUSTER)
    # Local builds make no image: the Dockerfile is no main file.
    assert decide(files).recorded_main_file == "streamlit_app.py"
