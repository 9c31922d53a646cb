"""Importing an existing git repository as a project: which URLs are accepted, how a token is
kept out of every message, and what is detected in the imported commit.

Pure functions: the forges fetch (local mode with git, cluster mode through GitLab's import) and
read the commit's files; what the project becomes is decided here.

* **URLs.** ``https://`` anywhere; ``http://`` only for this machine (localhost, 127.0.0.1,
  ::1), as a token would cross the network in clear. SSH, ``git://``, ``file://`` and git's
  transport helpers (``ext::``, ``fd::``) are refused: the last two would let a caller run
  commands or read the server's disk. A URL carrying a password is refused too (the token has
  a field of its own and is kept nowhere, while the URL is kept); a user name alone is taken.
* **Secrets.** A token is never put in a URL (local mode), a command line, a log line or an
  error: :func:`scrub` removes it, and its URL-encoded and Basic-auth forms, from whatever
  git or GitLab said before it is shown.
* **Detection.** The main file is decided by the repository's ``Dockerfile`` where builds use
  it (cluster mode), else by its ``nakama.toml`` ``run`` command if it has one, else it is the
  chosen file (which must exist), else ``streamlit_app.py`` (Streamlit Community Cloud's
  default) or ``app.py`` at the root. The Python version is what the builds will use:
  ``.python-version`` where the builds honour it (cluster mode), else the builds' default; a
  chosen version must be the one the builds will use, as nothing in the repository is changed.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from nakama.errors import InvalidInput

MAX_URL_LENGTH = 2048
MAIN_CANDIDATES = ("streamlit_app.py", "app.py")  # looked for at the root, in this order
DEFAULT_MAIN = "app.py"  # what the runtimes run when a project records no main file
PYTHON_VERSION_FILE = ".python-version"
FROM_VERSION_FILE = f"from {PYTHON_VERSION_FILE}"
CONFIG_FILE = "nakama.toml"
DOCKERFILE = "Dockerfile"
CHOSEN, AT_THE_ROOT = "chosen", "found at the root"  # where a recorded main file comes from
# The user name sent with a token when none is given: GitLab takes any name with a personal or
# project access token ("oauth2" is the one its docs use), GitHub any non-empty one.
DEFAULT_USERNAME = "oauth2"
_LOOPBACK_NAMES = ("localhost",)
_MAIN_FILE = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}\.py$")
_PYTHON = re.compile(r"^(?:python-?)?(\d+\.\d+)(?:\.\d+)?$")
_REDACTED = "***"


@dataclass(frozen=True)
class SourceUrl:
    """An accepted source URL: ``url`` holds no credentials (it is what git is given and what
    the project keeps); ``username`` came from the URL's user part, if it had one."""

    url: str
    scheme: str
    host: str
    username: str | None = None

    @property
    def netloc(self) -> str:
        """``host[:port]``, as git's credential requests name the host."""
        return urlsplit(self.url).netloc

    @property
    def allowed_protocols(self) -> str:
        """``GIT_ALLOW_PROTOCOL`` for fetching it: its own scheme only, so an HTTPS source
        cannot be redirected to plain HTTP (nor to any other transport)."""
        return self.scheme


@dataclass(frozen=True)
class ImportSource:
    """Where to import from and with which credentials (``token`` None: a public source)."""

    url: SourceUrl
    token: str | None = field(default=None, repr=False)
    username: str = DEFAULT_USERNAME

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every form of the token a message could carry."""
        return secret_forms(self.token, username=self.username)


@dataclass(frozen=True)
class Imported:
    """A repository made from a source: its deploy ``branch``, that branch's head ``commit``
    and where the branch came from (``branch_from``)."""

    branch: str
    commit: str
    branch_from: str


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) is this machine."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_source_url(text: str) -> SourceUrl:
    """The source URL ``text``, checked (see the module docstring); InvalidInput says why not.
    No message repeats the URL, which may hold a secret."""
    url = text.strip()
    if not url:
        raise InvalidInput("the source URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"the source URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInput("the source URL contains spaces or control characters")
    scheme_part = url.split("://", 1)[0] if "://" in url else ""
    if "::" in url.split("/", 1)[0] or (not scheme_part and "::" in url):
        raise InvalidInput(
            "git transport helpers (ext::, fd::) are not allowed: give the repository's "
            "https:// URL"
        )
    if not scheme_part:
        if re.match(r"^[^/:@]+@[^/:]+:", url):
            raise InvalidInput(
                "SSH URLs (user@host:path) are not supported: give the repository's https:// URL"
            )
        raise InvalidInput("the source is not a URL: give the repository's https:// URL")
    scheme = scheme_part.lower()
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        raise InvalidInput("SSH URLs are not supported: give the repository's https:// URL")
    if scheme == "file":
        raise InvalidInput("file:// URLs are not allowed: give the repository's https:// URL")
    if scheme == "git":
        raise InvalidInput(
            "git:// is neither encrypted nor authenticated: give the repository's https:// URL"
        )
    if scheme not in ("https", "http"):
        raise InvalidInput(f"only https:// URLs can be imported, not {scheme[:20]}://")
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidInput("the source URL's host or port is not valid") from exc
    if not host:
        raise InvalidInput("the source URL names no host")
    if scheme == "http" and not is_loopback(host):
        raise InvalidInput(
            "http:// is allowed only for this machine (localhost, 127.0.0.1, ::1): a token "
            "would cross the network in clear; give the repository's https:// URL"
        )
    if parts.password is not None:
        raise InvalidInput(
            "the source URL contains a password or token: give it in the token field instead "
            "(the token is kept nowhere; the URL is kept with the project)"
        )
    if parts.query or parts.fragment:
        raise InvalidInput("the source URL has a query or fragment; give the clone URL alone")
    if parts.path in ("", "/"):
        raise InvalidInput("the source URL names no repository (it has no path)")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    clean = urlunsplit((scheme, netloc, parts.path, "", ""))
    username = unquote(parts.username) if parts.username else None
    return SourceUrl(url=clean, scheme=scheme, host=host, username=username or None)


def url_with_credentials(source: ImportSource) -> str:
    """The URL with the user name and token in its user part, for GitLab's ``import_url`` (as
    GitLab documents it); never for git's command line."""
    parts = urlsplit(source.url.url)
    if source.token is None:
        return source.url.url
    user = quote(source.username, safe="")
    token = quote(source.token, safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{token}@{parts.netloc}"))


def secret_forms(token: str | None, *, username: str = DEFAULT_USERNAME) -> tuple[str, ...]:
    """The token as given, URL-encoded, and in Basic-auth headers (with and without the user
    name): whatever a tool may echo of it. Longest first, so that one never half-hides another."""
    if not token:
        return ()
    forms = {
        token,
        quote(token, safe=""),
        quote(token),
        base64.b64encode(f"{username}:{token}".encode()).decode(),
        base64.b64encode(f"{quote(username, safe='')}:{quote(token, safe='')}".encode()).decode(),
        base64.b64encode(token.encode()).decode(),
    }
    return tuple(sorted(forms, key=len, reverse=True))


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any of ``secrets`` and without the user part of any URL in it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return _URL_USERINFO.sub(r"\1" + _REDACTED + "@", text)


def fetch_problem(message: str, *, url: str, with_token: bool) -> str:
    """What a failed fetch means for the user, from git's (already scrubbed) message."""
    text = message.lower()
    where = f"the source {url}"
    if "authentication failed" in text or "returned error: 401" in text:
        if with_token:
            return (
                f"{where} refused the token (authentication failed): check the token, its "
                "user name, and that it may read the repository"
            )
        return f"{where} needs credentials: give a token that may read the repository"
    if "could not read username" in text or "could not read password" in text:
        return f"{where} needs credentials: give a token that may read the repository"
    if "returned error: 403" in text:
        return f"{where} refused access (HTTP 403): the token may not read this repository"
    if "returned error: 404" in text or "not found" in text:
        return f"there is no git repository at {url} (HTTP 404): check the URL"
    if "could not resolve host" in text or "could not resolve proxy" in text:
        return f"the host of {url} cannot be resolved: check the URL"
    if "failed to connect" in text or "couldn't connect" in text or "connection refused" in text:
        return f"{where} cannot be reached (connection refused or unreachable)"
    if "timed out" in text:
        return f"{where} did not answer in time"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return f"{where} could not be reached over TLS: {_last_line(message)}"
    if "not valid" in text or "is this a git repository" in text:
        return f"{url} is not a git repository"
    return f"{where} could not be fetched: {_last_line(message)}"


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:300]


def check_main_file(path: str) -> str:
    """A chosen main file: a relative path to a ``.py`` file inside the repository."""
    if not _MAIN_FILE.match(path):
        raise InvalidInput(
            "the main file must be a relative path to a .py file inside the repository, "
            "such as 'streamlit_app.py' or 'src/dashboard.py' (letters, digits, '_', '-', '.', '/')"
        )
    return path


def parse_python_version(text: str) -> str | None:
    """``3.12`` from ``3.12``, ``3.12.4`` or ``python-3.12`` (what ``.python-version`` and
    the generated Dockerfile understand); None for anything else."""
    match = _PYTHON.match(text.strip())
    return match.group(1) if match else None


def check_python_version(text: str) -> str:
    version = parse_python_version(text)
    if version is None or not version.startswith("3."):
        raise InvalidInput("the Python version must look like 3.12")
    return version


@dataclass(frozen=True)
class BuildPolicy:
    """What the builds do with a repository: the Python they use, ``default`` (major.minor;
    None: unknown) and where that comes from (``default_from``, naming the setting), whether
    ``.python-version`` overrides it (``reads_version_file``: cluster builds do, local ones run
    every app on one interpreter), and whether a repository's ``Dockerfile`` makes the image, so
    that its command runs the app (``dockerfile_decides``: cluster builds)."""

    default: str | None
    default_from: str
    reads_version_file: bool
    dockerfile_decides: bool = False


@dataclass(frozen=True)
class Detection:
    """What an import decided, each with where it came from."""

    branch: str
    branch_from: str
    main_file: str | None
    main_file_from: str
    python_version: str | None
    python_from: str
    notes: tuple[str, ...] = ()

    @property
    def recorded_main_file(self) -> str | None:
        """What the project records: None when the runtimes' default (``app.py``) or the
        repository (its ``nakama.toml`` or ``Dockerfile``) decides how the app runs."""
        if self.main_file_from not in (CHOSEN, AT_THE_ROOT) or self.main_file == DEFAULT_MAIN:
            return None
        return self.main_file

    def summary(self) -> list[str]:
        """One line per decision, for people."""
        main = self.main_file or "-"
        python = f"Python {self.python_version}" if self.python_version else "Python: unknown"
        return [
            f"branch: {self.branch} ({self.branch_from})",
            f"main file: {main} ({self.main_file_from})",
            f"{python} ({self.python_from})",
            *self.notes,
        ]


def files_to_read(chosen_main: str | None) -> list[str]:
    """The paths detection looks at (exact paths: they match the root's files only)."""
    paths = [CONFIG_FILE, PYTHON_VERSION_FILE, DOCKERFILE, *MAIN_CANDIDATES]
    if chosen_main and chosen_main not in paths:
        paths.append(chosen_main)
    return paths


def detect(
    files: Mapping[str, bytes],
    *,
    branch: str,
    branch_from: str,
    chosen_main: str | None,
    chosen_python: str | None,
    builds: BuildPolicy,
) -> Detection:
    """Decide the main file and the Python version from the imported commit's ``files`` (the
    paths of :func:`files_to_read` that exist there). InvalidInput when no main file is found,
    a chosen one is missing, or a chosen Python version is not the one the builds would use."""
    notes: list[str] = []
    main, main_from = _main_file(files, chosen_main, branch=branch, builds=builds, notes=notes)
    version, version_from = _python(files, chosen_python, builds, notes=notes)
    return Detection(
        branch=branch,
        branch_from=branch_from,
        main_file=main,
        main_file_from=main_from,
        python_version=version,
        python_from=version_from,
        notes=tuple(notes),
    )


def _main_file(
    files: Mapping[str, bytes],
    chosen: str | None,
    *,
    branch: str,
    builds: BuildPolicy,
    notes: list[str],
) -> tuple[str | None, str]:
    if builds.dockerfile_decides and DOCKERFILE in files:
        if chosen is not None:
            raise InvalidInput(
                f"the repository's {DOCKERFILE} makes the image and its command runs the app: "
                "leave out the main file, or change the Dockerfile"
            )
        return None, f"the repository's {DOCKERFILE} (its command runs the app)"
    run = _config_run(files.get(CONFIG_FILE))
    if run is not None:
        if chosen is not None:
            shown = shlex.join(run)[:200]
            raise InvalidInput(
                f"the repository's {CONFIG_FILE} says how to run the app (run = {shown!r}): "
                "leave out the main file, or change the run command there"
            )
        return _streamlit_script(run), f"{CONFIG_FILE}'s run command: {shlex.join(run)[:200]}"
    if chosen is not None:
        if chosen not in files:
            raise InvalidInput(
                f"the main file {chosen!r} is not in branch {branch!r} of the source"
            )
        return chosen, CHOSEN
    found = [name for name in MAIN_CANDIDATES if name in files]
    if not found:
        raise InvalidInput(
            f"no main file found: neither {' nor '.join(MAIN_CANDIDATES)} is at the root of "
            f"branch {branch!r}; choose one (e.g. 'src/dashboard.py'), or add a {CONFIG_FILE} "
            "with the app's run command"
        )
    if len(found) > 1:
        notes.append(
            f"{found[1]} is at the root too; choose it as the main file to run that one instead"
        )
    return found[0], AT_THE_ROOT


def _config_run(data: bytes | None) -> tuple[str, ...] | None:
    """``nakama.toml``'s run command, split; None without one. A file the runtime would refuse
    is refused here already, with the runtime's reason."""
    if data is None:
        return None
    try:
        parsed = tomllib.loads(data.decode(errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"the repository's {CONFIG_FILE} is not valid TOML: {exc}") from exc
    run = parsed.get("run")
    if run is None:
        return None
    if not isinstance(run, str):
        raise InvalidInput(f"the repository's {CONFIG_FILE}: 'run' must be a string")
    try:
        args = tuple(shlex.split(run))
    except ValueError as exc:
        raise InvalidInput(f"the repository's {CONFIG_FILE}: 'run' cannot be split: {exc}") from exc
    if not args:
        raise InvalidInput(f"the repository's {CONFIG_FILE}: 'run' is empty")
    return args


def _streamlit_script(args: tuple[str, ...]) -> str | None:
    """The script of a ``streamlit run <script>`` command, if it is one."""
    for i, arg in enumerate(args[:-1]):
        if arg == "run" and i >= 1 and args[i - 1].endswith("streamlit"):
            script = args[i + 1]
            return None if script.startswith("-") else script
    return None


def _python(
    files: Mapping[str, bytes], chosen: str | None, policy: BuildPolicy, *, notes: list[str]
) -> tuple[str | None, str]:
    raw = files.get(PYTHON_VERSION_FILE)
    asked = parse_python_version(raw.decode(errors="replace")) if raw is not None else None
    if raw is not None and asked is None:
        notes.append(
            f"{PYTHON_VERSION_FILE} is not understood (it should hold a version such as 3.12); "
            "the builds' default is used"
        )
    from_file = policy.reads_version_file and asked is not None
    used = asked if from_file else policy.default
    used_from = FROM_VERSION_FILE if from_file else policy.default_from
    if chosen is not None:
        if used is not None and chosen != used:
            raise InvalidInput(_python_refusal(chosen, used, used_from, policy))
        return chosen, "chosen" if used is None else f"chosen; the builds agree ({used_from})"
    if asked is not None and not policy.reads_version_file:
        if asked == policy.default:
            return asked, f"{FROM_VERSION_FILE}, the same as {policy.default_from}"
        notes.append(
            f"{PYTHON_VERSION_FILE} asks for Python {asked}, but these builds run every app on "
            f"Python {policy.default or 'of the server'} ({policy.default_from})"
        )
    return used, used_from


def _python_refusal(chosen: str, used: str, used_from: str, policy: BuildPolicy) -> str:
    if used_from == FROM_VERSION_FILE:
        how = f"change {PYTHON_VERSION_FILE} in the repository, or leave the version out"
    elif policy.reads_version_file:
        how = f"commit a {PYTHON_VERSION_FILE} with {chosen} to the repository first"
    else:
        how = "leave the version out, or ask the operator to change that setting"
    return (
        f"Python {chosen} was chosen, but the builds would use Python {used} ({used_from}): {how}"
    )
