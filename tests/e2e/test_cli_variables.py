"""`nakama variables list|set|unset` as people and scripts use them: the installed console script
against a real `nakama up`, alice's project, bob beside her. A secret's value goes in on stdin or
at a prompt without echo, never on the command line, and never comes back out: not in the CLI's
output, not in the server's log; the app gets it."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nakama_server import NakamaProcess, app_request, wait_for
from tests.e2e.test_cli import NAKAMA
from tests.e2e.two_users import Run, alice_and_bob_with_a_project, serve_tiny_kit

# The app answers with the variables it was started with: LEVEL as it is, TOKEN as a hash.
ENV_APP = """\
import hashlib, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        token = os.environ.get("TOKEN")
        digest = hashlib.sha256(token.encode()).hexdigest() if token is not None else "-"
        body = f"level={os.environ.get('LEVEL', '-')} token={digest}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

SECRET = "s3cr3t-Value-0f-alice-9f2c"  # long enough for a preview of its last 2 characters
PROJECT = "vars-app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    yield from serve_tiny_kit(tmp_path_factory.mktemp("cli-variables"), uv_cache, app=ENV_APP)


@pytest.fixture(scope="module")
def users(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return alice_and_bob_with_a_project(server, tmp_path_factory, PROJECT)


@pytest.fixture(scope="module")
def alice(users: dict[str, Run]) -> Run:
    return users["alice"]


@pytest.fixture(scope="module")
def bob(users: dict[str, Run]) -> Run:
    return users["bob"]


def api_variables(server: NakamaProcess) -> dict[str, dict[str, object]]:
    r = server.api.get(f"/api/v1/projects/{PROJECT}/variables")
    assert r.status_code == 200, r.text
    return {v["key"]: v for v in r.json()}


def app_says(server: NakamaProcess) -> str:
    url = server.project(PROJECT)["app_url"]
    r = app_request(url)
    assert r.status_code == 200, r.text
    return r.text


def table(stdout: str) -> dict[str, list[str]]:
    """``variables list``'s rows by key (the header left out)."""
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    assert lines[0][:3] == ["key", "secret", "value"], stdout
    return {row[0]: row[1:] for row in lines[1:]}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_set_list_and_unset_a_plain_variable(server: NakamaProcess, alice: Run) -> None:
    for args in (("LEVEL", "--value", "3"), ("LEVEL=4",)):
        out = alice("variables", "set", PROJECT, *args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{PROJECT}: LEVEL set (not secret); the app restarts with it"
    assert api_variables(server)["LEVEL"]["value"] == "4"
    assert app_says(server).startswith("level=4 ")

    listed = alice("variables", "list", PROJECT)
    assert listed.returncode == 0, listed.stderr
    assert table(listed.stdout)["LEVEL"][:2] == ["no", "4"]
    as_json = alice("variables", "list", PROJECT, "--json")
    assert json.loads(as_json.stdout) == list(api_variables(server).values())

    gone = alice("variables", "unset", PROJECT, "LEVEL")
    assert gone.returncode == 0, gone.stderr
    assert "LEVEL" not in api_variables(server)
    assert app_says(server).startswith("level=- ")
    again = alice("variables", "unset", PROJECT, "LEVEL")
    assert again.returncode == 3
    assert "variable 'LEVEL' of project 'vars-app' not found" in again.stderr


def test_a_secret_goes_in_on_stdin_and_never_comes_out(server: NakamaProcess, alice: Run) -> None:
    args = ("variables", "set", PROJECT, "TOKEN", "--secret")
    assert all(SECRET not in arg for arg in args)  # on the command line: the name only
    out = alice(*args, input=SECRET + "\n")  # as `echo "$TOKEN" | nakama variables set …`
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{PROJECT}: TOKEN set (secret); the app restarts with it"

    stored = api_variables(server)["TOKEN"]
    assert (stored["secret"], stored["value"], stored["preview"]) == (True, None, "…2c")
    # The app has the value as sent, without the newline echo added.
    assert app_says(server).endswith(f"token={digest(SECRET)}")

    listed = alice("variables", "list", PROJECT)
    assert table(listed.stdout)["TOKEN"][:2] == ["yes", "********…2c"]
    as_json = alice("variables", "list", PROJECT, "--json")
    for answer in (out, listed, as_json):
        assert SECRET not in answer.stdout + answer.stderr
    assert SECRET not in server.log_path.read_text(errors="replace")


def test_a_secrets_value_on_the_command_line_is_refused(server: NakamaProcess, alice: Run) -> None:
    assert "API_KEY" not in api_variables(server)
    for args in (
        ("API_KEY=hunter2-on-argv", "--secret"),
        ("API_KEY", "--secret", "--value", "hunter2-on-argv"),
    ):
        out = alice("variables", "set", PROJECT, *args, input="ignored\n")
        assert out.returncode == 2, out.stderr
        message = " ".join(out.stderr.split())
        assert "a secret's value is not taken from the command line" in message
        assert "standard input" in message and "nothing set" in message
        assert "hunter2" not in out.stdout + out.stderr  # the value is not repeated
    assert "API_KEY" not in api_variables(server)

    # A secret is not turned into a plain variable by a `set` that forgets --secret.
    assert alice("variables", "set", PROJECT, "API_KEY", "--secret", input=SECRET).returncode == 0
    plain = alice("variables", "set", PROJECT, "API_KEY", "--value", "visible")
    assert plain.returncode == 2
    assert "API_KEY is a secret of vars-app: give --secret to replace it" in " ".join(
        plain.stderr.split()
    )
    assert api_variables(server)["API_KEY"]["secret"] is True

    empty = alice("variables", "set", PROJECT, "OTHER", "--secret", input="")
    assert empty.returncode == 2
    assert "nothing on standard input" in empty.stderr
    closed = subprocess.run(  # a script started with no standard input at all
        [NAKAMA, "variables", "set", PROJECT, "OTHER", "--secret"],
        env=alice.env,  # type: ignore[attr-defined]
        preexec_fn=lambda: os.close(0),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert closed.returncode == 2, closed.stderr
    assert "nothing on standard input" in closed.stderr
    assert "OTHER" not in api_variables(server)


def test_a_terminal_is_asked_without_echo(server: NakamaProcess, alice: Run) -> None:
    """With a terminal on stdin the value is typed at a prompt that does not echo it (twice,
    for a secret); what the terminal shows never holds it."""
    typed = "typed-at-the-prompt-7781"
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        env = alice.env  # type: ignore[attr-defined]
        argv = [NAKAMA, "variables", "set", PROJECT, "TYPED", "--secret"]
        os.execve(NAKAMA, argv, env)  # noqa: S606 - the pty's child becomes the CLI
    shown = b""

    def read_until(marker: bytes) -> None:
        nonlocal shown
        deadline = time.monotonic() + 60
        while marker not in shown:
            assert time.monotonic() < deadline, shown
            if select.select([fd], [], [], 1)[0]:
                try:
                    shown += os.read(fd, 4096)
                except OSError:  # the child is gone: the pty has nothing more
                    raise AssertionError(f"no {marker!r} before the CLI ended: {shown!r}") from None

    def type_when_echo_is_off(text: str) -> None:
        """Typed once the prompt has turned echo off (it discards what came before)."""
        wait_for(lambda: not termios.tcgetattr(fd)[3] & termios.ECHO, timeout=60, what="echo off")
        os.write(fd, text.encode() + b"\n")

    read_until(b"Value of TYPED")
    type_when_echo_is_off(typed)
    read_until(b"Repeat it")
    type_when_echo_is_off(typed)
    read_until(b"the app restarts with it")
    _, status = os.waitpid(pid, 0)
    try:
        while select.select([fd], [], [], 0.2)[0]:
            shown += os.read(fd, 4096)
    except OSError:  # the child is gone: the pty has nothing more
        pass
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    assert typed.encode() not in shown
    stored = api_variables(server)["TYPED"]
    assert (stored["secret"], stored["value"], stored["preview"]) == (True, None, "…81")


def test_bob_can_neither_see_nor_change_alices_variables(
    server: NakamaProcess, alice: Run, bob: Run
) -> None:
    assert alice("variables", "set", PROJECT, "SHOWN=alice-only").returncode == 0
    before = api_variables(server)
    for args, stdin in (
        (("variables", "list", PROJECT), None),
        (("variables", "list", PROJECT, "--json"), None),
        (("variables", "set", PROJECT, "SHOWN=bob"), None),
        (("variables", "set", PROJECT, "TOKEN", "--secret"), "bob-overwrites\n"),
        (("variables", "unset", PROJECT, "SHOWN"), None),
    ):
        out = bob(*args, input=stdin)
        assert out.returncode == 3, (args, out.stderr)
        assert f"project {PROJECT!r} not found" in out.stderr  # as if missing
        assert "alice-only" not in out.stdout + out.stderr
    assert api_variables(server) == before
    assert app_says(server).endswith(f"token={digest(SECRET)}")

    # As a viewer bob may open the app, not read its variables: told so, not to log in again.
    assert alice("projects", "share", PROJECT, "bob", "--role", "viewer").returncode == 0
    try:
        out = bob("variables", "list", PROJECT)
        assert out.returncode == 4, out.stderr
        message = " ".join(out.stderr.split())
        assert f"you do not have access to the variables of project {PROJECT!r}" in message
        assert "viewer; this needs developer or higher" in message
        assert "nakama login" not in message and "not authenticated" not in message
        assert "alice-only" not in out.stdout + out.stderr
    finally:
        assert alice("projects", "unshare", PROJECT, "bob").returncode == 0
