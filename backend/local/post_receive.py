"""The post-receive hook of local-mode repositories: tells the receiver about each pushed ref.

git runs ``python -m backend.local.post_receive`` in the bare repository after the refs moved, with
one ``<old> <new> <ref>`` line per ref on stdin. For each branch or tag it gathers the commits as
GitLab would, builds the same Push Hook body and POSTs it to every URL in ``nakama/hook.json`` with
the token from ``nakama/hook-token``. It is on the push-to-live path and started once per push, so
it imports little (one HTTP/1.1 request on a socket, :func:`post`; no ``http.client``) and
delivers to all URLs at once. Whatever happens, the pusher gets one ``remote:`` line per ref and
the hook exits 0: the push has already happened, and webhooks are hints that reconciling repairs.

After delivering a push to the deploy branch it tells the pusher what the push will do and the
app's address: ``requirements.txt changed: building a new environment; ...`` or ``only code
changed (1 file): live reload ...``. The plan is :func:`nakama.planning.plan_push`'s, from the
inputs the event processor gives it (git's compare, the dependency hash, whether that build is
there), gathered here from the repository and the environments directory without asking the
server. Nakama's git server hands the hook what it needs of its settings in
``NAKAMA_PUSH_CONTEXT`` (:class:`PushContext`); a push that did not come through it (a plain
``git push`` into the directory) gets no such line. A plan that cannot be made is left out.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from backend.local.push_payload import (
    DEFAULT_MAX_BODY_BYTES,
    GIT_LOG_FORMAT,
    MAX_COMMITS,
    CommitInfo,
    ProjectInfo,
    Pusher,
    build_push_payload,
    delivery_headers,
    encode_within,
    parse_git_log,
    parse_push_options,
)
from nakama import __version__
from nakama.clients.git import git_text, mask_credentials, run_git
from nakama.planning import BRANCH_PREFIX, TAG_PREFIX, ZERO_SHA

DELIVERY_TIMEOUT_S = 10.0  # GitLab's default webhook timeout
_REASON_LIMIT = 200
_ANSWER_LIMIT = 64 * 1024  # the receiver's answers are a few hundred bytes
_BARE_PATHS = ("/build-image", "/code-reload")
CONTEXT_ENV = "NAKAMA_PUSH_CONTEXT"


class PushContext(NamedTuple):
    """What the hook needs of Nakama's settings to plan a push as the event processor will:
    handed over by the git server in :data:`CONTEXT_ENV` for each push."""

    app_url: str | None
    envs_dir: str
    dependency_files: tuple[str, ...]
    max_file_bytes: int
    reload_strategy: str

    def to_env(self) -> dict[str, str]:
        fields = {
            "app_url": self.app_url,
            "envs_dir": self.envs_dir,
            "dependency_files": list(self.dependency_files),
            "max_file_bytes": self.max_file_bytes,
            "reload_strategy": self.reload_strategy,
        }
        return {CONTEXT_ENV: json.dumps(fields)}

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str]) -> PushContext | None:
        """The context the git server handed over; None if there is none (or it is not one:
        then the push goes without a plan line, delivered all the same)."""
        raw = environ.get(CONTEXT_ENV)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                app_url=data.get("app_url"),
                envs_dir=str(data["envs_dir"]),
                dependency_files=tuple(str(p) for p in data["dependency_files"]),
                max_file_bytes=int(data["max_file_bytes"]),
                reload_strategy=str(data.get("reload_strategy", "restart")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class HookConfig(NamedTuple):
    """What ``LocalForge`` wrote into ``<repo>/nakama/`` for this hook."""

    project: ProjectInfo
    urls: tuple[str, ...]
    instance: str
    token: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def project_url(url: str, project: str) -> str:
    """A receiver URL that names the project: repositories made before the receiver took
    ``/build-image/<project>`` have the bare ``/build-image`` in their hook.json."""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith(_BARE_PATHS):
        return parts._replace(path=f"{parts.path.rstrip('/')}/{project}").geturl()
    return url


def load_config(repo: Path) -> HookConfig:
    raw = json.loads((repo / "nakama" / "hook.json").read_text())
    token = (repo / "nakama" / "hook-token").read_text().strip()
    name = raw["project"]
    instance = raw["instance"].rstrip("/")
    project = ProjectInfo(
        id=int(raw.get("project_id", 0)),
        name=name,
        namespace=raw.get("namespace", "local"),
        web_url=raw.get("web_url", f"{instance}/{name}"),
        git_http_url=raw.get("git_http_url", f"{instance}/git/{name}.git"),
        default_branch=raw.get("default_branch", "main"),
    )
    urls = tuple(project_url(url, name) for url in raw["urls"])
    limit = int(raw.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    return HookConfig(project, urls, instance, token, limit)


def branch_commits(
    repo: Path, *, ref: str, before: str, after: str
) -> tuple[list[CommitInfo], int]:
    """The commits a push to a branch brought, oldest → newest (newest 20 at most), and how many
    there were: ``before..after`` for an update; for a new branch, what no other branch has."""
    if before == ZERO_SHA:
        branch = ref[len(BRANCH_PREFIX) :]
        revs = [after, "--not", f"--exclude={branch}", "--branches"]
    else:
        revs = [f"{before}..{after}"]
    log = run_git(
        [
            "log",
            "-z",
            "--name-status",
            "-M",
            "--diff-merges=first-parent",
            "--no-color",
            f"--format={GIT_LOG_FORMAT}",
            f"-n{MAX_COMMITS}",
            *revs,
            "--",
        ],
        git_dir=repo,
    ).stdout
    commits = parse_git_log(log)[::-1]
    total = len(commits)
    if total >= MAX_COMMITS:
        total = int(git_text(["rev-list", "--count", *revs, "--"], git_dir=repo))
    return commits, total


def tag_target(repo: Path, ref: str) -> tuple[str | None, str | None]:
    """The commit a tag points to and, for an annotated tag, its message."""
    out = git_text(
        [
            "for-each-ref",
            "--format=%(objecttype)%00%(*objectname)%00%(objectname)%00%(contents)",
            ref,
        ],
        git_dir=repo,
    )
    if not out:
        return None, None
    kind, peeled, direct, contents = [*out.split("\0", 3), "", "", ""][:4]
    if kind == "tag":
        return peeled or None, contents
    return direct or None, None


def push_options_from_env() -> dict[str, Any]:
    count = int(os.environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)
    return parse_push_options(os.environ.get(f"GIT_PUSH_OPTION_{i}", "") for i in range(count))


def build_payload(
    repo: Path, config: HookConfig, *, ref: str, before: str, after: str
) -> dict[str, Any]:
    pusher = Pusher(name=os.environ.get("REMOTE_USER") or os.environ.get("USER") or "nakama")
    commits: list[CommitInfo] = []
    total = 0
    checkout: str | None = None
    message: str | None = None
    if after != ZERO_SHA:
        if ref.startswith(TAG_PREFIX):
            checkout, message = tag_target(repo, ref)
        else:
            commits, total = branch_commits(repo, ref=ref, before=before, after=after)
    return build_push_payload(
        project=config.project,
        pusher=pusher,
        ref=ref,
        before=before,
        after=after,
        commits=commits,
        total_commits_count=total,
        checkout_sha=checkout,
        tag_message=message,
        push_options=push_options_from_env(),
    )


def post(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """POST once; None on success (2xx or 3xx, as GitLab counts it), else what went wrong.

    One HTTP/1.1 request with ``Connection: close`` on a plain socket (TLS for https): the
    standard library's ``http.client`` imports the ``email`` package, 25 ms of the hook's budget
    of 30 (issue 13), for a request this simple. The answer is read to its end or
    :data:`_ANSWER_LIMIT` bytes, whichever comes first."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or "localhost"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2] or host}"]
    fields = {**headers, "Content-Length": str(len(body)), "Connection": "close"}
    for name, value in fields.items():
        if any(c in f"{name}{value}" for c in "\r\n\0"):  # no header injection, as http.client
            return f"{mask_credentials(url)}: header {name!r} holds a line break"
        lines.append(f"{name}: {value}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    try:
        with socket.create_connection(
            (host, parts.port or (443 if https else 80)), timeout=DELIVERY_TIMEOUT_S
        ) as raw:
            conn = raw
            if https:
                import ssl  # only then: its import costs 7 ms

                conn = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            conn.sendall(request)
            answer = _read_answer(conn)
    except (OSError, UnicodeError) as exc:
        return f"could not reach {mask_credentials(url)}: {type(exc).__name__}: {exc}"[:400]
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, status_reason = status_line.partition(" ")
    code, _, reason = status_reason.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        return f"{mask_credentials(url)} did not answer HTTP: {status_line[:80]!r}"
    status = int(code)
    if 200 <= status < 400:
        return None
    if b"transfer-encoding: chunked" in head.lower():
        rest = _unchunk(rest)
    detail = rest[:_REASON_LIMIT].decode(errors="replace").strip()
    shown = f" ({detail})" if detail else ""
    return f"{mask_credentials(url)} answered HTTP {status} {reason}{shown}"


def _read_answer(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _ANSWER_LIMIT:
        chunk = conn.recv(_ANSWER_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _unchunk(data: bytes) -> bytes:
    """The body of a chunked answer, as far as it was read."""
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def random_uuid() -> str:
    """A random (version 4) UUID as text. Not the uuid module: on Linux it imports platform, a
    few milliseconds of every push's hook (issue 13) for sixteen random bytes."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def deliver(payload: dict[str, Any], config: HookConfig) -> list[str]:
    """Send ``payload`` to every URL at once; the problems, if any. A body that would be
    larger than the receiver takes goes without the commits' file lists (see
    :func:`~backend.local.push_payload.encode_within`)."""
    body, _ = encode_within(payload, max_bytes=config.max_body_bytes)
    event_uuid = random_uuid()
    problems: list[str | None] = [None] * len(config.urls)

    def send(index: int, url: str) -> None:
        headers = delivery_headers(
            payload,
            url=url,
            token=config.token,
            instance=config.instance,
            event_uuid=event_uuid,
            webhook_uuid=random_uuid(),
            idempotency_key=random_uuid(),  # this event to this URL: sent once
            version=__version__,
        )
        problems[index] = post(url, body, headers)

    threads = [threading.Thread(target=send, args=(i, u)) for i, u in enumerate(config.urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [p for p in problems if p]


def summary(config: HookConfig, *, ref: str, after: str, problems: list[str]) -> str:
    short = after[:8]
    if ref.startswith(TAG_PREFIX):
        what = f"tag {ref[len(TAG_PREFIX) :]}"
        done = "deletion received" if after == ZERO_SHA else f"received ({short})"
        line = f"nakama: {what} {done}"
    else:
        branch = ref[len(BRANCH_PREFIX) :]
        default = config.project.default_branch
        if after == ZERO_SHA:
            line = f"nakama: deletion of branch {branch} received"
        elif branch == default:
            line = f"nakama: push to {branch} received ({short}); deploying"
        else:
            line = f"nakama: push to {branch} received ({short}); only {default} deploys"
    if problems:
        line = f"nakama: push to {ref} ({short}) was NOT delivered: " + "; ".join(problems)
    return line


def plan_lines(
    repo: Path, config: HookConfig, context: PushContext, *, ref: str, before: str, after: str
) -> list[str]:
    """What the push of ``ref`` will do and the app's address (nothing for other branches)."""
    branch = config.project.default_branch
    if ref != f"{BRANCH_PREFIX}{branch}" or after == ZERO_SHA:
        return []
    # Imported here, after the delivery: what only the forecast needs costs the push nothing.
    from backend.local.forge import LocalForge
    from code_reloader.live import live_eligible
    from image_builder.published import find_project_environment
    from nakama.appconfig import CONFIG_FILE, load_app_config
    from nakama.planning import Action, RefUpdate, plan_push, push_message
    from nakama.tagging import dependency_hash

    project = config.project.name
    forge = LocalForge(
        repos_dir=repo.parent, base_url=config.instance, max_file_bytes=context.max_file_bytes
    )
    patterns = context.dependency_files
    changed = None if before == ZERO_SHA else forge.changed_paths(project, before, after)
    dep_hash = dependency_hash(forge.read_files(project, after, patterns))
    plan = plan_push(
        RefUpdate(ref=ref, before=before, after=after),
        deploy_branch=branch,
        dependency_patterns=patterns,
        changed_paths=changed,
        build_exists=find_project_environment(Path(context.envs_dir), dep_hash, project)
        is not None,
    )
    live = False
    if plan.action is Action.RELOAD and context.reload_strategy == "live" and changed:
        toml = forge.read_files(project, after, [CONFIG_FILE]).get(CONFIG_FILE)
        config_text = None if toml is None else toml.decode(errors="replace")
        command = load_app_config(config_text).command(python="python", port="$PORT")
        live = live_eligible(changed, command=command)
    lines = [f"nakama: {push_message(plan, live=live)}"]
    if context.app_url:
        lines.append(f"nakama: app: {context.app_url}")
    return lines


def handle(repo: Path, lines: list[str], *, context: PushContext | None = None) -> list[str]:
    """Deliver one event per pushed branch or tag; the lines to show the pusher."""
    config = load_config(repo)
    out: list[str] = []
    for line in lines:
        fields = line.split()
        if len(fields) != 3:
            continue
        before, after, ref = fields
        if not ref.startswith((BRANCH_PREFIX, TAG_PREFIX)):
            continue
        payload = build_payload(repo, config, ref=ref, before=before, after=after)
        problems = [p.replace(config.token, "[REDACTED]") for p in deliver(payload, config)]
        out.append(summary(config, ref=ref, after=after, problems=problems))
        if context is None or problems:
            continue
        try:
            out += plan_lines(repo, config, context, ref=ref, before=before, after=after)
        except Exception:  # noqa: S112 - a forecast only: the push is delivered, say nothing more
            continue
    return out


def main() -> int:
    repo = Path(os.environ.get("GIT_DIR", ".")).resolve()
    lines = sys.stdin.read().splitlines()
    try:
        output = handle(repo, lines, context=PushContext.from_env(os.environ))
    except Exception as exc:  # the push already happened: report, never crash at the pusher
        reason = mask_credentials(f"{type(exc).__name__}: {exc}")[:300]
        output = [f"nakama: could not notify Nakama of this push: {reason}"]
    for text in output:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
