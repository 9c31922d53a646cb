"""Git credentials without a token in any repository: ``nakama login`` makes a token of the user's
own for git, keeps it beside the CLI's login (mode 0600) and registers ``nakama auth
git-credential`` as git's credential helper for the server's URL in the user's global git config,
as ``gh auth setup-git`` does. Clone URLs then carry no credentials, and ``.git/config`` holds
none.

``nakama auth git-credential get`` speaks git's credential helper protocol: it reads
``key=value`` lines up to a blank line and answers ``username=`` and ``password=`` only for the
server it was set up for; it never touches the network. ``nakama logout`` takes the helper out of
git's config, revokes the git token and forgets the login."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import typer

from nakama.errors import InvalidInput, NakamaError, NotFound, Unauthorized
from nakama_cli.api_client import NakamaClient, config_path, load_saved, resolve
from nakama_cli.commands import EXIT_ERROR, _err, _exit_codes, _note

GIT_CREDENTIAL_FILE = "git-credential.json"
# What a git token is named in the user's token list: git@<this machine>.
GIT_NAME_PREFIX = "git@"
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- pure: the protocol and the helper's command -----------------------------------------------
@dataclass(frozen=True)
class GitCredential:
    """The token git gets for one Nakama server."""

    url: str
    username: str
    token: str
    token_id: int
    name: str


def parse_request(text: str) -> dict[str, str]:
    """The ``key=value`` lines git sends, up to the first blank line (later lines and lines
    without ``=`` are ignored; a key given twice keeps its last value)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def _origin(scheme: str, host: str) -> tuple[str, str]:
    """(scheme, host[:port]) in lower case, without the scheme's default port."""
    scheme, host = scheme.lower(), host.lower()
    name, sep, port = host.rpartition(":")
    if sep and "]" not in port and port == str(_DEFAULT_PORTS.get(scheme)):
        host = name
    return scheme, host


def answer(request: dict[str, str], stored: GitCredential | None) -> str:
    """What ``get`` prints for ``request``: the stored username and token when protocol, host
    (and path, if git sends one) are the server's, else nothing, so that git goes on to the
    next helper or asks."""
    if stored is None:
        return ""
    server = urlsplit(stored.url)
    if _origin(request.get("protocol", ""), request.get("host", "")) != _origin(
        server.scheme, server.netloc
    ):
        return ""
    prefix = server.path.strip("/")
    path = request.get("path", "").lstrip("/")
    if "path" in request and prefix and not (path == prefix or path.startswith(prefix + "/")):
        return ""
    if request.get("username") not in (None, "", stored.username):
        return ""  # the URL names another user: not ours to answer
    return f"username={stored.username}\npassword={stored.token}\n"


def helper_command(executable: str, config_dir: str | None) -> str:
    """The value of ``credential.<url>.helper``: a shell command (``!``) that git completes
    with the operation. ``config_dir`` (NAKAMA_CONFIG_DIR at login) is named in it, so git
    finds the token without that variable."""
    command = f"!{shlex.quote(executable)} auth git-credential"
    if config_dir:
        command += f" --config-dir {shlex.quote(config_dir)}"
    return command


def git_token_name(hostname: str) -> str:
    return (GIT_NAME_PREFIX + (hostname or "localhost"))[:100]


# --- the stored git credential ---------------------------------------------------------------
def credential_path(config_dir: str | None = None) -> Path:
    base = Path(config_dir).expanduser() if config_dir else config_path().parent
    return base / GIT_CREDENTIAL_FILE


def load_credential(config_dir: str | None = None) -> GitCredential | None:
    path = credential_path(config_dir)
    try:
        data = json.loads(path.read_text())
        return GitCredential(
            url=str(data["url"]),
            username=str(data["username"]),
            token=str(data["token"]),
            token_id=int(data["token_id"]),
            name=str(data.get("name", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or not ours: nothing to answer with


def save_credential(credential: GitCredential) -> Path:
    """Written with mode 0600 in one rename (the directory 0700), like the CLI's login."""
    path = credential_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(credential), f)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# --- git's global config ---------------------------------------------------------------------
def global_config_problem() -> str | None:
    """Why git's global config cannot take the helper (None: it can)."""
    if shutil.which("git") is None:
        return "git is not installed"
    target = os.environ.get("GIT_CONFIG_GLOBAL")
    if target is not None:
        path = Path(target)
        # git would replace it with a regular file (/dev/null, as tests and CI set it).
        if not target or (path.exists() and not path.is_file()):
            return f"git's global config is {target or 'empty'} (GIT_CONFIG_GLOBAL)"
    return None


def _git_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "config", "--global", *args], capture_output=True, text=True, check=False
    )


def register_helper(url: str, *, username: str, command: str) -> None:
    """``credential.<url>.helper``: an empty entry first (helpers configured before are not
    asked for this server), then ours; and ``credential.<url>.username``."""
    key = f"credential.{url}"
    for args in (
        ("--replace-all", f"{key}.helper", ""),
        ("--add", f"{key}.helper", command),
        ("--replace-all", f"{key}.username", username),
    ):
        done = _git_config(*args)
        if done.returncode != 0:
            raise NakamaError(f"git config {args[1]} failed: {done.stderr.strip()[:300]}")


def unregister_helper(url: str) -> None:
    """Take our entries for ``url`` out of the global config (nothing there: nothing to do)."""
    key = f"credential.{url}"
    for name in ("helper", "username"):
        done = _git_config("--unset-all", f"{key}.{name}")
        if done.returncode not in (0, 5):  # 5: there was none
            raise NakamaError(f"git config --unset-all failed: {done.stderr.strip()[:300]}")
    names = _git_config("--list", "--name-only").stdout.splitlines()
    if not any(n.lower().startswith(key.lower() + ".") for n in names):
        _git_config("--remove-section", key)  # an empty section is left otherwise


def nakama_executable() -> str:
    """This ``nakama`` as an absolute path (git runs the helper without our PATH)."""
    here = Path(sys.argv[0])
    if here.name == "nakama" and here.is_file():
        return str(here.absolute())
    found = shutil.which("nakama")
    if found is None:
        raise InvalidInput("cannot find the `nakama` command to register as git's helper")
    return str(Path(found).absolute())


# --- the steps login, setup-git and logout share -------------------------------------------------
def whoami(client: NakamaClient) -> dict[str, Any]:
    """The server's answer about the client's own token (id, name, username, is_admin)."""
    return dict(client.request("GET", "/tokens/current").json())


def revoke_stored(credential: GitCredential) -> bool:
    """Revoke a stored git token with itself; False if the server could not be asked (it is
    already revoked, or gone with its user, counts as done)."""
    try:
        with NakamaClient(credential.url, credential.token) as client:
            path = f"/users/{quote(credential.username, safe='')}/tokens/{credential.token_id}"
            client.request("DELETE", path)
    except (Unauthorized, NotFound):
        return True
    except NakamaError:
        return False
    return True


def set_up_git(client: NakamaClient, url: str) -> str:
    """Make a git token for the client's user, store it, register the helper for ``url``;
    returns what was done, for the user. An earlier git token of this login is revoked."""
    problem = global_config_problem()
    if problem is not None:
        return f"git credentials not set up: {problem}"
    who = whoami(client)
    username = who.get("username")
    if not username:
        return "git credentials not set up: this token belongs to no user"
    command = helper_command(nakama_executable(), os.environ.get("NAKAMA_CONFIG_DIR"))
    name = git_token_name(socket.gethostname())
    made = client.new_token(str(username), name)
    with NakamaClient(url, str(made["token"])) as as_git:
        token_id = int(whoami(as_git)["id"])
    earlier = load_credential()
    save_credential(
        GitCredential(
            url=url, username=str(username), token=str(made["token"]), token_id=token_id, name=name
        )
    )
    if earlier is not None:  # replaced: the older git token of this login goes
        revoke_stored(earlier)
        if earlier.url != url and global_config_problem() is None:
            unregister_helper(earlier.url)
    register_helper(url, username=str(username), command=command)
    return (
        f"git: a token named {name!r} (id {token_id}) answers for {url} "
        f"(credential helper `nakama auth git-credential` in git's global config)"
    )


# --- commands --------------------------------------------------------------------------------
auth_app = typer.Typer(
    help="Git's credentials for Nakama: the credential helper and its set-up.",
    no_args_is_help=True,
)


@auth_app.command("git-credential")
def git_credential(
    operation: Annotated[str, typer.Argument(help="get, store or erase (git says which)")],
    config_dir: Annotated[
        str | None, typer.Option(help="where the login is (NAKAMA_CONFIG_DIR at login)")
    ] = None,
) -> None:
    """Git's credential helper: answers `get` with the git token for the logged-in server."""
    request = parse_request(sys.stdin.read())
    if operation == "get":
        sys.stdout.write(answer(request, load_credential(config_dir)))
    # store and erase: the token is kept by `nakama login` and revoked by `nakama logout`.


@auth_app.command("setup-git")
def setup_git() -> None:
    """Register the credential helper for the logged-in server again, with a new git token
    if the stored one no longer works."""
    url, token = resolve()
    with _exit_codes():
        problem = global_config_problem()
        if problem is not None:
            raise InvalidInput(f"git credentials not set up: {problem}")
        stored = load_credential()
        if stored is not None and stored.url == url:
            try:
                with NakamaClient(url, stored.token) as as_git:
                    valid = whoami(as_git).get("username") == stored.username
            except Unauthorized:
                valid = False
            if valid:
                command = helper_command(nakama_executable(), os.environ.get("NAKAMA_CONFIG_DIR"))
                register_helper(url, username=stored.username, command=command)
                _note(f"git: token {stored.name!r} (id {stored.token_id}) answers for {url}")
                return
        with NakamaClient(url, token) as client:
            _note(set_up_git(client, url))


def logout() -> None:
    """Take the git credential helper out of git's config, revoke the git token and forget
    the saved login (the token you logged in with stays valid)."""
    stored = load_credential()
    saved_url = load_saved().get("url")
    unreached = stored is not None and not revoke_stored(stored)
    with _exit_codes():
        if global_config_problem() is None:
            for url in {u for u in (saved_url, stored.url if stored else None) if u}:
                unregister_helper(url)
        for path in (credential_path(), config_path()):
            path.unlink(missing_ok=True)
    if unreached and stored is not None:
        _err(
            f"could not reach {stored.url} to revoke git token {stored.token_id}; "
            f"revoke it with `nakama users revoke {stored.username} {stored.token_id}`"
        )
        raise typer.Exit(EXIT_ERROR)
    where = saved_url or (stored.url if stored else None)
    _note(f"logged out of {where}" if where else "not logged in")


def register(app: typer.Typer) -> None:
    app.add_typer(auth_app, name="auth")
    app.command("logout")(logout)
