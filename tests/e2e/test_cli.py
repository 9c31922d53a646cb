"""The client commands (`nakama login`, `projects`, `pipelines`, `logs`) as scripts use them: the
installed `nakama` console script in a subprocess against a real `nakama up` in local mode."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nakama.auth import verify_password
from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    clone,
    fetch_text,
    git,
    git_push,
    wait_for,
    write_tiny_kit,
)
from tests.support import free_port

NAKAMA = shutil.which("nakama") or "nakama"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("cli")
    kit = write_tiny_kit(root / "kit")
    nakama = NakamaProcess(data_dir=root / "data", starter_kit=kit, uv_cache=uv_cache)
    nakama.start()
    yield nakama
    nakama.close()


def cli_env(config_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAKAMA_")}
    env.update({"NAKAMA_CONFIG_DIR": str(config_dir), "COLUMNS": "200", **extra})
    return env


@pytest.fixture
def run(server: NakamaProcess, tmp_path: Path) -> Any:
    """Run `nakama ARGS` with NAKAMA_URL / NAKAMA_TOKEN pointing at the server."""

    def _run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = cli_env(tmp_path / "cfg", NAKAMA_URL=server.url, NAKAMA_TOKEN=ADMIN_TOKEN)
        return subprocess.run(
            [NAKAMA, *args], env=env, input=input, capture_output=True, text=True, timeout=300
        )

    return _run


@pytest.fixture(scope="module")
def project(server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`projects create --wait --json` of one project that the read tests share."""
    env = cli_env(tmp_path_factory.mktemp("cfg"), NAKAMA_URL=server.url, NAKAMA_TOKEN=ADMIN_TOKEN)
    out = subprocess.run(
        [NAKAMA, "projects", "create", "cli-demo", "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    created = dict(json.loads(out.stdout))  # stdout is the JSON and nothing else
    assert "cli-demo: running" in out.stderr or "pipeline #" in out.stderr  # progress: stderr
    return created


def test_login_saves_a_checked_token_privately(server: NakamaProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    env = cli_env(cfg)
    bad = subprocess.run(
        [NAKAMA, "login", "--url", server.url, "--token", "nkm_wrong_token_123"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 4, bad.stderr
    assert "not authenticated" in bad.stderr
    assert "nkm_wrong_token_123" not in bad.stdout + bad.stderr
    assert not (cfg / "cli.json").exists()

    # the token typed at the (hidden) prompt; no terminal here, so it is read from stdin
    good = subprocess.run(
        [NAKAMA, "login", "--url", server.url],
        env=env,
        input=ADMIN_TOKEN + "\n",
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    assert good.returncode == 0, good.stderr
    assert ADMIN_TOKEN not in good.stdout + good.stderr
    saved = cfg / "cli.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": server.url, "token": ADMIN_TOKEN}

    # later commands use the saved login; NAKAMA_TOKEN overrides it
    listed = subprocess.run(
        [NAKAMA, "projects", "list", "--json"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    overridden = subprocess.run(
        [NAKAMA, "projects", "list"],
        env={**env, "NAKAMA_TOKEN": "nkm_other_wrong"},
        capture_output=True,
        text=True,
    )
    assert overridden.returncode == 4


def test_unreachable_server_is_exit_1_with_a_clear_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [NAKAMA, "projects", "list"],
        env=cli_env(tmp_path, NAKAMA_URL=url, NAKAMA_TOKEN=ADMIN_TOKEN),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert f"cannot reach Nakama at {url}" in out.stderr
    assert ADMIN_TOKEN not in out.stderr


def test_create_waits_until_the_app_answers(
    server: NakamaProcess, project: dict[str, Any], run: Any
) -> None:
    assert project["name"] == "cli-demo" and project["status"] == "running"
    assert fetch_text(project["app_url"]) == "v1"
    again = run("projects", "create", "cli-demo", "--no-wait")
    assert again.returncode == 5, again.stderr
    assert "conflict" in again.stderr
    bad = run("projects", "create", "Bad_Name", "--no-wait")
    assert bad.returncode == 6, bad.stderr
    assert "a name such as 'sales-dashboard'" in bad.stderr
    missing = run("projects", "show", "no-such-project")
    assert missing.returncode == 3
    usage = run("projects", "create")
    assert usage.returncode == 2


def test_list_and_show_match_the_api(
    server: NakamaProcess, project: dict[str, Any], run: Any
) -> None:
    listed = run("projects", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    api = server.api.get("/api/v1/projects").json()
    assert json.loads(listed.stdout) == api
    shown = run("projects", "show", "cli-demo", "--json")
    assert json.loads(shown.stdout) == server.project("cli-demo")

    table = run("projects", "list")
    row = next(line for line in table.stdout.splitlines() if line.strip().startswith("cli-demo"))
    assert "running" in row and project["app_url"] in row
    assert project["deployed_commit"][:8] in row and project["image_tag"] in row
    view = run("projects", "show", "cli-demo")
    assert re.search(r"last push\s+build:", view.stdout), view.stdout
    assert project["clone_url"] in view.stdout


def test_pipelines_table_and_log(server: NakamaProcess, project: dict[str, Any], run: Any) -> None:
    pipes = server.pipelines("cli-demo")
    out = run("pipelines", "cli-demo")
    assert out.returncode == 0, out.stderr
    header, *rows = [line for line in out.stdout.splitlines() if line.strip()]
    assert header.split()[:4] == ["id", "kind", "status", "commit"]
    first = pipes[-1]
    assert any(
        r.split()[:4] == [str(first["id"]), "build", "success", first["commit"][:8]] for r in rows
    ), out.stdout
    as_json = run("pipelines", "cli-demo", "--json")
    assert json.loads(as_json.stdout) == server.pipelines("cli-demo")
    log = run("pipelines", "cli-demo", "--log", str(first["id"]))
    assert log.returncode == 0
    api_log = server.api.get(f"/api/v1/projects/cli-demo/pipelines/{first['id']}/log").text
    assert log.stdout.strip() == api_log.strip() and log.stdout.strip()
    assert run("pipelines", "cli-demo", "--log", "999999").returncode == 3


def test_logs_tail_and_follow(
    server: NakamaProcess, project: dict[str, Any], run: Any, tmp_path: Path
) -> None:
    tail = run("logs", "cli-demo", "--tail", "1")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == ["tiny app starting v1"]
    as_json = run("logs", "cli-demo", "--json")
    assert "tiny app starting v1" in json.loads(as_json.stdout)

    env = cli_env(tmp_path / "cfg", NAKAMA_URL=server.url, NAKAMA_TOKEN=ADMIN_TOKEN)
    lines: list[str] = []
    with subprocess.Popen(
        [NAKAMA, "logs", "cli-demo", "-f", "--tail", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # Ctrl-C as at a terminal, even when the tests run in the background (where a shell
        # starts them with SIGINT ignored, which a child would inherit)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as follower:
        reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []), daemon=True)
        reader.start()
        try:
            wait_for(lambda: lines, timeout=30, what="the first lines")
            before = len(lines)
            # a code change restarts the tiny app (not Streamlit), which logs its new version
            work = clone(server, "cli-demo", tmp_path / "work")
            app = work / "app.py"
            app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
            git("commit", "-qam", "v2", cwd=work)
            git_push(work)
            wait_for(
                lambda: "tiny app starting v2\n" in lines[before:],
                timeout=60,
                interval=0.2,
                what="the new line from logs -f",
            )
        finally:
            follower.send_signal(signal.SIGINT)
            code = follower.wait(timeout=15)
            reader.join(timeout=5)
    assert code == 130
    assert lines.count("tiny app starting v2\n") == 1, lines  # new lines only, once


def test_delete_asks_for_the_name_then_waits(server: NakamaProcess, run: Any) -> None:
    created = run("projects", "create", "cli-gone", "--no-wait", "--json")
    assert created.returncode == 0, created.stderr
    refused = run("projects", "delete", "cli-gone", input="cli-gon\n")
    assert refused.returncode == 2
    assert "nothing deleted" in refused.stderr
    assert server.project("cli-gone")["status"] != "deleting"
    no_input = run("projects", "delete", "cli-gone", input="")
    assert no_input.returncode == 2
    assert server.project("cli-gone")["status"] != "deleting"

    gone = run("projects", "delete", "cli-gone", "--yes", "--wait")
    assert gone.returncode == 0, gone.stderr
    assert run("projects", "show", "cli-gone").returncode == 3
    assert run("projects", "delete", "cli-gone", "--yes").returncode == 3


def test_follow_finds_new_lines_in_a_moving_tail() -> None:
    from nakama_cli.commands import new_lines

    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]  # the log grew inside the window
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the window moved
    assert new_lines(["a", "b"], ["a", "b", "b"]) == ["b"]  # a repeated line is still new
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["x", "y"], ["p", "q"]) == ["p", "q"]  # no overlap: rotated


def test_rollback_goes_back_and_waits(server: NakamaProcess, run: Any, tmp_path: Path) -> None:
    created = run("projects", "create", "cli-back", "--json")
    assert created.returncode == 0, created.stderr
    first = json.loads(created.stdout)
    [build] = server.pipelines("cli-back")
    work = clone(server, "cli-back", tmp_path / "work")
    app = work / "app.py"
    app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    git("commit", "-qam", "v2", cwd=work)
    sha2 = git("rev-parse", "HEAD", cwd=work)
    git_push(work)
    server.wait_deployed("cli-back", sha2)
    reload = server.pipelines("cli-back")[0]

    listed = run("projects", "rollback-targets", "cli-back", "--json")
    assert listed.returncode == 0, listed.stderr
    assert (
        json.loads(listed.stdout)
        == server.api.get("/api/v1/projects/cli-back/rollback-targets").json()
    )
    assert [t["id"] for t in json.loads(listed.stdout)] == [build["id"]]
    table = run("projects", "rollback-targets", "cli-back")
    header, row = [line for line in table.stdout.splitlines() if line.strip()]
    assert header.split()[:3] == ["id", "kind", "commit"]
    assert row.split()[:3] == [str(build["id"]), "build", build["commit"][:8]]

    # no --to: the newest target, the first build; waits until it is deployed
    back = run("projects", "rollback", "cli-back")
    assert back.returncode == 0, back.stderr
    pipeline = server.pipelines("cli-back")[0]
    assert back.stdout.strip() == (
        f"cli-back: rolled back to {first['deployed_commit'][:8]} (pipeline #{pipeline['id']})"
    )
    assert f"rollback to pipeline #{build['id']}" in back.stderr  # progress: stderr
    assert fetch_text(first["app_url"]) == "v1"
    assert server.project("cli-back")["last_push"]["action"] == "rollback"

    forward = run("projects", "rollback", "cli-back", "--to", str(reload["id"]), "--json")
    assert forward.returncode == 0, forward.stderr
    answer = json.loads(forward.stdout)  # the new pipeline, finished
    assert (answer["status"], answer["commit"], answer["kind"]) == ("success", sha2, "build")
    assert fetch_text(first["app_url"]) == "v2"

    deployed = run("projects", "rollback", "cli-back", "--to", str(answer["id"]))
    assert deployed.returncode == 5 and "deployed now" in deployed.stderr
    assert run("projects", "rollback", "cli-back", "--to", "999999").returncode == 3
    assert run("projects", "rollback", "no-such-project").returncode == 3
    assert run("projects", "rollback", "cli-back", "--to", "0").returncode == 2

    lone = run("projects", "create", "cli-lone", "--no-wait")
    assert lone.returncode == 0, lone.stderr
    nothing = run("projects", "rollback", "cli-lone")
    assert nothing.returncode == 5
    assert "no earlier successful pipeline to roll back to" in nothing.stderr


def stored_password_hash(server: NakamaProcess, username: str) -> str | None:
    with sqlite3.connect(server.data_dir / "nakama.db") as db:
        row = db.execute("SELECT password_hash FROM users WHERE username=?", (username,))
        (stored,) = row.fetchone()
    return None if stored is None else str(stored)


def test_users_create_list_token_and_password(
    server: NakamaProcess, run: Any, tmp_path: Path
) -> None:
    password = "correct horse battery"
    made = run("users", "create", "carol", "--password-stdin", input=password + "\n")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()  # the token alone on stdout, for $(...)
    assert re.fullmatch(r"nkm_\S{20,}", token), made.stdout
    assert "shown only once" in made.stderr
    assert password not in made.stdout + made.stderr
    assert verify_password(password, stored_password_hash(server, "carol"))
    carol_env = cli_env(tmp_path / "carol", NAKAMA_URL=server.url, NAKAMA_TOKEN=token)

    def as_carol(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NAKAMA, *args], env=carol_env, input=input, capture_output=True, text=True
        )

    assert as_carol("projects", "list", "--json").returncode == 0

    assert run("users", "create", "carol").returncode == 5
    assert run("users", "create", "Bad Name").returncode == 6
    short = run("users", "create", "dave", "--password-stdin", input="tiny7ch\n")
    assert short.returncode == 6 and "8 to 1024 characters" in short.stderr
    assert "tiny7ch" not in short.stdout + short.stderr
    as_json = run("users", "create", "erin", "--json")
    assert as_json.returncode == 0, as_json.stderr
    erin = json.loads(as_json.stdout)
    assert erin["username"] == "erin" and erin["token"].startswith("nkm_")
    assert stored_password_hash(server, "erin") is None

    listed = run("users", "list", "--json")
    assert json.loads(listed.stdout) == server.api.get("/api/v1/users").json()
    table = run("users", "list")
    row = next(line for line in table.stdout.splitlines() if " carol " in f" {line} ")
    assert row.split()[2] == "no"
    assert as_carol("users", "list").returncode == 4  # admins only

    # a new token: by an admin, or by the user; both work, the old one too
    fresh = run("users", "token", "carol")
    assert fresh.returncode == 0, fresh.stderr
    own = as_carol("users", "token", "carol")
    assert own.returncode == 0, own.stderr
    tokens = {token, fresh.stdout.strip(), own.stdout.strip()}
    assert len(tokens) == 3
    for t in tokens:
        headers = {"Authorization": f"Bearer {t}"}
        assert httpx.get(f"{server.url}/api/v1/projects", headers=headers).status_code == 200
    assert as_carol("users", "token", "erin").returncode == 4
    assert run("users", "token", "nobody").returncode == 3

    # the password: asked twice without echo (no terminal here: read from stdin)
    env = cli_env(tmp_path / "cfg", NAKAMA_URL=server.url, NAKAMA_TOKEN=ADMIN_TOKEN)

    def ask(*lines: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NAKAMA, "users", "password", "carol"],
            env=env,
            input="".join(f"{line}\n" for line in lines),
            capture_output=True,
            text=True,
            start_new_session=True,
        )

    differ = ask("first password 1", "second password 2")
    assert differ.returncode == 2 and "differ" in differ.stderr
    assert verify_password(password, stored_password_hash(server, "carol"))
    changed = ask("a new password", "a new password")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "carol: password set"
    assert "a new password" not in changed.stdout + changed.stderr
    assert verify_password("a new password", stored_password_hash(server, "carol"))

    mine = as_carol("users", "password", "carol", "--password-stdin", input="carols own pw\n")
    assert mine.returncode == 0, mine.stderr
    assert verify_password("carols own pw", stored_password_hash(server, "carol"))
    theirs = as_carol("users", "password", "erin", "--password-stdin", input="not carols pw\n")
    assert theirs.returncode == 4
    assert stored_password_hash(server, "erin") is None
    gone = run("users", "password", "nobody", "--password-stdin", input="whatever123\n")
    assert gone.returncode == 3
    for secret in (password, "a new password", "carols own pw", token):
        assert secret not in server.log()
