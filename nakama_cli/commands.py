"""The client commands of ``nakama``: ``login``, ``projects …``, ``pipelines``, ``logs`` (and,
in :mod:`nakama_cli.users`, ``users …``).

They talk to a running Nakama through :mod:`nakama_cli.api_client`. Tables and progress are for
people (progress on stderr); ``--json`` prints the API's shapes and nothing else on stdout.
Exit codes are in :data:`EXIT_CODES_HELP`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nakama.errors import Conflict, Forbidden, InvalidInput, NakamaError, NotFound, Unauthorized
from nakama_cli.api_client import NakamaClient, resolve, save_login

T = TypeVar("T")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH = 0, 1, 2, 3, 4
EXIT_CONFLICT, EXIT_INVALID, EXIT_FAILED, EXIT_INTERRUPTED = 5, 6, 7, 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 unexpected or server error (5xx, unreachable); 2 usage error; "
    "3 not found (also another's project); "
    "4 not authenticated, or not allowed (your role in the project is too low); "
    "5 conflict (name taken, nothing to roll back to, the project's last owner); "
    "6 invalid input (the server's message is printed); 7 a waited-for operation failed; "
    "130 interrupted. Server and token come from --url/--token of `nakama login`, "
    "NAKAMA_URL / NAKAMA_TOKEN, or the saved login (NAKAMA_CONFIG_DIR or ~/.config/nakama)."
)


class WaitFailed(NakamaError):
    """Something the command waited for ended in failure (or did not finish in time)."""


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole lines (rich would otherwise wrap at 80 columns).
    wide = None if stream.isatty() or os.environ.get("COLUMNS") else 200
    return Console(stderr=stderr, width=wide, highlight=False)


def _err(message: str) -> None:
    _console(stderr=True).print(Text(f"error: {message}", style="red"))


def _note(message: str) -> None:
    _console(stderr=True).print(Text(message))


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


# Error kinds in the order they are matched, with a message prefix and the documented exit code.
_EXITS: tuple[tuple[type[NakamaError], str, int], ...] = (
    (WaitFailed, "", EXIT_FAILED),
    (NotFound, "not found: ", EXIT_NOT_FOUND),
    (Forbidden, "", EXIT_AUTH),  # its message says what the caller has no access to
    (Unauthorized, "", EXIT_AUTH),
    (Conflict, "conflict: ", EXIT_CONFLICT),
    (InvalidInput, "invalid: ", EXIT_INVALID),
)


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Nakama's errors become a message on stderr and the documented exit code."""
    try:
        yield
    except KeyboardInterrupt:
        _note("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except NakamaError as exc:
        prefix, code = next(
            ((p, c) for kind, p, c in _EXITS if isinstance(exc, kind)), ("", EXIT_ERROR)
        )
        _err(f"{prefix}{exc}")
        raise typer.Exit(code) from None


@contextmanager
def _client() -> Iterator[NakamaClient]:
    with _exit_codes(), NakamaClient.from_config() as client:
        yield client


def _short(sha: str | None) -> str:
    return sha[:8] if sha else "-"


def local_time(value: str | None) -> str:
    """An API timestamp (ISO 8601 with its zone) in this machine's local time (``TZ``), to the
    second: ``2026-12-04 11:03:54+09:00``. A time without a zone (an older server) is UTC."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


# What a table cell says of a pipeline's error at most; the whole of it is in the log.
SHORT_REASON_CHARS = 60


def short_reason(error: str | None, limit: int = SHORT_REASON_CHARS) -> str:
    """An error cut for a table cell: its first line, without a clause that only introduces
    what follows (``; last log lines:``), at most ``limit`` characters."""
    if not error:
        return ""
    first = error.strip().split("\n", 1)[0].strip()
    if first.endswith(":"):
        head, sep, _ = first.rpartition("; ")
        first = head if sep else first.rstrip(":")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON, nothing else")]


# --- login -----------------------------------------------------------------------------------
def login(
    url: Annotated[str | None, typer.Option(help="Nakama's URL (default: NAKAMA_URL)")] = None,
    token: Annotated[
        str | None, typer.Option(help="an API token (asked for, hidden, if not given)")
    ] = None,
    git: Annotated[
        bool,
        typer.Option(
            "--git/--no-git",
            help="also make a token for git and register `nakama auth git-credential` as "
            "git's credential helper for this URL (global git config)",
        ),
    ] = True,
) -> None:
    """Check a token against a Nakama server and save both for later commands (mode 0600);
    git then clones and pushes with a token of its own, kept beside them, never in a URL."""
    from nakama_cli.auth import set_up_git

    final_url, _ = resolve(url, None)
    if not token:
        token = typer.prompt(f"API token for {final_url}", hide_input=True, err=True)
    with _exit_codes(), NakamaClient(final_url, token) as client:
        found = client.list_projects()
        path = save_login(final_url, str(token))
        _note(f"logged in to {final_url} ({len(found)} projects); saved to {path}")
        if git:
            _note(set_up_git(client, final_url))
            elsewhere = sorted(
                {p["clone_url"] for p in found if not p["clone_url"].startswith(final_url + "/")}
            )
            if elsewhere:
                _note(
                    f"note: git's helper answers for {final_url} only, and clone URLs such as "
                    f"{elsewhere[0]} are elsewhere"
                )


# --- projects --------------------------------------------------------------------------------
projects_app = typer.Typer(
    help="Create, list, show, roll back and delete projects; share them, set who may open "
    "their app and when it sleeps; see and (admins) set what their app may use.",
    no_args_is_help=True,
)


class _Progress:
    """A rich status line on a terminal; one line per change otherwise (CI logs)."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self.live = self.console.is_terminal
        self.status = self.console.status("") if self.live else None
        self.last = ""

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def update(self, text: str, elapsed: float) -> None:
        if self.status is not None:
            self.status.update(Text(f"{text}  ({elapsed:.0f}s)"))
        elif text != self.last:
            self.console.print(Text(text))
        self.last = text


def _follow(
    look: Callable[[], tuple[str | None, T | WaitFailed | None]],
    *,
    timeout: float,
    late: Callable[[str], str],
) -> T:
    """Look every half second until ``look`` returns a result, showing the text it returns as
    progress (None: nothing to show). ``look`` returns a WaitFailed when what it follows failed,
    raised here once shown; after ``timeout`` seconds WaitFailed(``late(last text)``)."""
    started, text = time.monotonic(), ""
    with _Progress() as progress:
        while True:
            shown, result = look()
            if shown is not None:
                text = shown
                progress.update(text, time.monotonic() - started)
            if isinstance(result, WaitFailed):
                raise result
            if result is not None:
                return result
            if time.monotonic() - started > timeout:
                raise WaitFailed(late(text))
            time.sleep(0.5)


def _wait_running(client: NakamaClient, name: str, timeout: float) -> dict[str, Any]:
    def look() -> tuple[str, dict[str, Any] | WaitFailed | None]:
        project = client.get_project(name)
        pipes = client.pipelines(name)
        first = min(pipes, key=lambda p: p["id"]) if pipes else None
        text = f"{name}: {project['status']}"
        if first is not None:
            text += f", pipeline #{first['id']} ({first['kind']}) {first['status']}"
        if project["status"] == "running" and project.get("deployed_commit"):
            return text, project
        failed = first is not None and first["status"] in ("failed", "canceled")
        if project["status"] == "failed" or (failed and not project.get("deployed_commit")):
            why = project.get("status_message") or (first or {}).get("error") or "failed"
            return text, WaitFailed(f"{name}: {why}")
        return text, None

    return _follow(
        look,
        timeout=timeout,
        late=lambda text: f"{name}: not running after {timeout:.0f}s ({text})",
    )


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="a DNS-1123 label, e.g. sales-dashboard")],
    maintainer: Annotated[
        str | None, typer.Option(help="cluster mode: the GitLab user who maintains the repo")
    ] = None,
    source_url: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="import this git repository (its https:// clone URL) instead of the starter kit",
        ),
    ] = None,
    branch: Annotated[
        str | None, typer.Option(help="with --from: the branch to deploy (default: its HEAD)")
    ] = None,
    main_file: Annotated[
        str | None,
        typer.Option(
            help="with --from: the app's script (default: streamlit_app.py or app.py at the root)"
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option("--python", help="with --from: the Python version the app needs, e.g. 3.12"),
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="with --from: the user name sent with the token")
    ] = None,
    token_stdin: Annotated[
        bool,
        typer.Option(
            "--token-stdin",
            help="with --from: read the source's token from the first line of stdin",
        ),
    ] = False,
    ask_token: Annotated[
        bool,
        typer.Option(
            "--ask-token",
            help="with --from: ask for the source's token (hidden), for a private one",
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="follow the first pipeline until the app runs or fails")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 900,
    json_out: JsonOpt = False,
) -> None:
    """Create a project: its repository with the starter kit (or, with --from, an existing git
    repository's branches and tags), its environment, the app. A token for a private source is
    read from stdin or asked for, never taken from the command line; it is used for the import
    only and kept nowhere."""
    source: dict[str, str] | None = None
    with _exit_codes():
        given = [opt for opt, value in (("--branch", branch), ("--main-file", main_file),
                 ("--python", python), ("--username", username), ("--token-stdin", token_stdin),
                 ("--ask-token", ask_token)) if value]  # fmt: skip
        if source_url is None and given:
            raise InvalidInput(f"{', '.join(given)} go with --from URL (an import)")
        if token_stdin and ask_token:
            raise InvalidInput("--token-stdin and --ask-token: choose one")
        if source_url is not None:
            source = {"url": source_url}
            for key, value in (("branch", branch), ("main_file", main_file),
                               ("python_version", python), ("username", username)):  # fmt: skip
                if value:
                    source[key] = value
            token = None
            if token_stdin:
                token = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
                if not token:
                    raise InvalidInput("--token-stdin: the first line of stdin is empty")
            elif ask_token:
                token = typer.prompt("Token for the source", hide_input=True, err=True)
            if token:
                source["token"] = token
            _note(f"importing {source_url} ...")
    with _client() as client:
        project = client.create_project(name, maintainer, source=source)
        detected = project.get("detected")
        if detected and not json_out:
            for line in detected.get("summary", []):
                _note(line)
        if wait:
            project = {**_wait_running(client, name, timeout), "detected": detected}
    if json_out:
        _print_json(project)
        return
    out = _console(stderr=False)
    out.print(Text(f"{project['name']}: {project['status']}"))
    out.print(Text(f"app:   {project.get('app_url') or '-'}"))
    out.print(Text(f"clone: {project['clone_url']}"))


@projects_app.command("list")
def projects_list(json_out: JsonOpt = False) -> None:
    """List projects: name, status, app URL, deployed commit and image tag."""
    with _client() as client:
        projects = client.list_projects()
    if json_out:
        _print_json(projects)
        return
    table = Table("name", "status", "app URL", "commit", "image tag", box=None)
    for p in projects:
        table.add_row(
            Text(p["name"]),
            Text(p["status"]),
            Text(p.get("app_url") or "-"),
            Text(_short(p.get("deployed_commit"))),
            Text(p.get("image_tag") or "-"),
        )
    _console(stderr=False).print(table)


@projects_app.command("show")
def projects_show(name: str, json_out: JsonOpt = False) -> None:
    """Show one project, with why its last push was built, reloaded or ignored."""
    with _client() as client:
        p = client.get_project(name)
    if json_out:
        _print_json(p)
        return
    push = p.get("last_push")
    rows = [
        ("name", p["name"]),
        ("status", p["status"] + (f" ({p['status_message']})" if p.get("status_message") else "")),
        ("app", p.get("app_state") or "-"),
        ("app URL", p.get("app_url") or "-"),
        ("clone URL", p["clone_url"]),
        ("deployed commit", p.get("deployed_commit") or "-"),
        ("image tag", p.get("image_tag") or "-"),
        ("last push", f"{push['action']}: {push['reason']}" if push else "-"),
        ("your role", p.get("role") or "-"),
        ("visibility", p.get("visibility") or "-"),
        (
            "sleeps after",
            f"{p['idle_timeout_s'] // 60} min" if p.get("idle_timeout_s") else "never",
        ),
        ("created", local_time(p["created_at"])),
        ("updated", local_time(p["updated_at"])),
    ]
    grid = Table.grid(padding=(0, 2))
    for key, value in rows:
        grid.add_row(Text(key, style="bold"), Text(str(value)))
    _console(stderr=False).print(grid)


@projects_app.command("delete")
def projects_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for the name")] = False,
    wait: Annotated[bool, typer.Option(help="wait until the project is gone")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 300,
    json_out: JsonOpt = False,
) -> None:
    """Delete a project: repository, app, its environments and records (asks first)."""
    with _client() as client:
        client.get_project(name)
        if not yes:
            confirm_name(name, "to delete it")
        answer = client.delete_project(name)
        if wait:

            def gone() -> tuple[str | None, dict[str, Any] | None]:
                try:
                    client.get_project(name)
                except NotFound:
                    return None, {"status": "deleted", "name": name}
                return f"{name}: deleting", None

            answer = _follow(
                gone, timeout=timeout, late=lambda _: f"{name}: still there after {timeout:.0f}s"
            )
    if json_out:
        _print_json(answer)
    else:
        _console(stderr=False).print(Text(f"{name}: {answer['status']}"))


def confirm_name(name: str, why: str) -> None:
    """Ask for the project's name typed back; exit with a usage error unless it is."""
    try:
        typed = typer.prompt(f"Type the project's name {why} ({name})", default="", err=True)
    except typer.Abort:
        typed = ""
    if typed.strip() != name:
        _err(f"{typed.strip()!r} is not {name!r}; nothing deleted")
        raise typer.Exit(EXIT_USAGE)


def _wait_pipeline(
    client: NakamaClient, name: str, pipeline: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Follow one pipeline until it succeeds (WaitFailed if it ends otherwise or takes too long)."""
    pipeline_id = pipeline["id"]

    def look() -> tuple[str, dict[str, Any] | WaitFailed | None]:
        current = client.pipeline(name, pipeline_id)
        text = f"{name}: pipeline #{pipeline_id} ({current['kind']}) {current['status']}"
        if current["status"] in ("failed", "canceled", "superseded"):
            why = f": {current['error']}" if current.get("error") else ""
            return text, WaitFailed(f"{text}{why}")
        return text, current if current["status"] == "success" else None

    return _follow(
        look,
        timeout=timeout,
        late=lambda _: f"{name}: pipeline #{pipeline_id} not done after {timeout:.0f}s",
    )


@projects_app.command("rollback")
def projects_rollback(
    name: str,
    to: Annotated[
        int | None,
        typer.Option(
            "--to",
            min=1,
            help="the pipeline to go back to (default: the newest of `rollback-targets`)",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="follow the new pipeline until the app runs the old commit")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 900,
    json_out: JsonOpt = False,
) -> None:
    """Go back to an earlier successful pipeline's commit and its image or environment.

    Nothing is rebuilt while that build still exists; the next push deploys as usual."""
    with _client() as client:
        if to is None:
            targets = client.rollback_targets(name)
            if not targets:
                raise Conflict(f"{name}: no earlier successful pipeline to roll back to")
            to = int(targets[0]["id"])
        pipeline = client.rollback(name, to)
        _note(f"{name}: pipeline #{pipeline['id']}: {pipeline['reason']}")
        if wait:
            pipeline = _wait_pipeline(client, name, pipeline, timeout)
    if json_out:
        _print_json(pipeline)
        return
    done = "rolled back to" if pipeline["status"] == "success" else "rolling back to"
    _console(stderr=False).print(
        Text(f"{name}: {done} {_short(pipeline['commit'])} (pipeline #{pipeline['id']})")
    )


@projects_app.command("rollback-targets")
def projects_rollback_targets(name: str, json_out: JsonOpt = False) -> None:
    """List the pipelines `rollback` can go back to (successful, one per commit, newest first)."""
    with _client() as client:
        rows = client.rollback_targets(name)
    if json_out:
        _print_json(rows)
        return
    table = Table("id", "kind", "commit", "finished", "reason", box=None)
    for p in rows:
        table.add_row(
            Text(str(p["id"])),
            Text(p["kind"]),
            Text(_short(p["commit"])),
            Text(local_time(p.get("finished_at"))),
            Text(p["reason"]),
        )
    _console(stderr=False).print(table)


# --- pipelines and logs ----------------------------------------------------------------------
def pipelines(
    name: str,
    log: Annotated[int | None, typer.Option(help="print this pipeline's log instead")] = None,
    limit: Annotated[int, typer.Option(help="newest pipelines to list", min=1, max=500)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """List a project's builds and reloads (newest first), or print one pipeline's log."""
    with _client() as client:
        if log is not None:
            text = client.pipeline_log(name, log)
            if json_out:
                _print_json({"project": name, "id": log, "log": text})
            else:
                typer.echo(text, nl=not text.endswith("\n"))
            return
        rows = client.pipelines(name, limit=limit)
    if json_out:
        _print_json(rows)
        return
    table = Table("id", "kind", "status", "commit", "reason", "started", "duration", box=None)
    failed = None
    for p in rows:
        duration = p.get("duration_s")
        why = short_reason(p.get("error"))
        if why and failed is None:
            failed = p["id"]
        table.add_row(
            Text(str(p["id"])),
            Text(p["kind"]),
            Text(p["status"] + (f": {why}" if why else "")),
            Text(_short(p["commit"])),
            Text(p["reason"]),
            Text(local_time(p.get("started_at") or p.get("created_at"))),
            Text("-" if duration is None else f"{duration:.1f}s"),
        )
    _console(stderr=False).print(table)
    if failed is not None:
        _note(f"the whole error and log: nakama pipelines {name} --log {failed}")


def _complete_lines(text: str) -> list[str]:
    """Whole lines only: a last line without its newline yet is left for the next poll."""
    lines = text.split("\n")
    return lines[:-1]


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of ``current`` (a later tail of the same log) that ``previous`` did not have."""
    if not previous:
        return current
    for end in range(len(current), 0, -1):
        k = min(end, len(previous))
        if current[end - k : end] == previous[len(previous) - k :]:
            return current[end:]
    return current  # no overlap: the log was rotated or more than a window was written


def logs(
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    tail: Annotated[int, typer.Option(help="lines to show first", min=1, max=10000)] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Print the app's log; with -f, poll every second and print new lines until Ctrl-C."""
    window = max(tail, 2000) if follow else tail
    with _client() as client:
        first = client.app_logs(name, tail=window)
        seen = _complete_lines(first) if follow else first.splitlines()
        _emit(seen[-tail:], json_out=json_out, stream=follow)
        while follow:
            time.sleep(1)
            current = _complete_lines(client.app_logs(name, tail=window))
            _emit(new_lines(seen, current), json_out=json_out, stream=True)
            seen = current


def _emit(lines: list[str], *, json_out: bool, stream: bool) -> None:
    if json_out and not stream:
        _print_json(lines)
    elif json_out:
        for line in lines:
            typer.echo(json.dumps(line))
    else:
        for line in lines:
            typer.echo(line)
    sys.stdout.flush()


# --- restart and open ------------------------------------------------------------------------
@projects_app.command("restart")
def projects_restart(name: str, json_out: JsonOpt = False) -> None:
    """Restart the app on what it runs now, with its variables (developers and owners)."""
    with _client() as client:
        project = client.restart(name)
    if json_out:
        _print_json(project)
        return
    state = project.get("app_state")
    if state == "running":
        said = f"{name}: restarted (app running)"
    elif state == "sleeping":
        said = f"{name}: not restarted: the app is asleep and starts on its next request"
    else:  # not deployed yet, or it did not come up: say how it is
        detail = project.get("app_detail")
        said = f"{name}: the app is {state or 'not deployed yet'}" + (
            f" ({detail})" if detail else ""
        )
    _console(stderr=False).print(Text(said))


def graphical_session() -> bool:
    """Whether a browser can open here without taking over this terminal: a desktop (macOS,
    Windows, an X or Wayland display) or a browser named in ``BROWSER``. On a server over SSH
    Python's webbrowser would start a text browser (lynx, w3m) in the terminal instead."""
    if sys.platform in ("darwin", "win32"):
        return True
    return any(os.environ.get(v) for v in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"))


def open_app(
    name: str,
    print_only: Annotated[
        bool, typer.Option("--print", help="print the app's URL instead of opening it")
    ] = False,
) -> None:
    """Open the app's URL in a browser; print it with --print or where no browser can open."""
    with _client() as client:
        url = client.get_project(name).get("app_url")
    if not url:
        _err(f"{name} has no app URL yet")
        raise typer.Exit(EXIT_NOT_FOUND)
    if print_only:
        typer.echo(url)
        return
    opened = False
    if graphical_session():
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    if opened:
        _note(f"opened {url}")
    else:
        typer.echo(url)
        _note("no browser to open here: open the URL above yourself (or name one in BROWSER)")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.add_typer(projects_app, name="projects")
    app.command("pipelines")(pipelines)
    app.command("logs")(logs)
    app.command("open")(open_app)
