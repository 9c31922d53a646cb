"""``nakama build``: the image-builder CI job of cluster mode.

One run: check out the commit; hash its dependency files; look in the registry at the branch's
timestamp tags, newest first, for an image labelled with that hash. Then:

* the newest tag has it: nothing to do (``skip: …``);
* an older tag has it (the dependencies went back to an earlier state): give that image a new
  timestamp tag, so that Flux's ImagePolicy, which deploys the newest tag, picks it. No build;
* none has it: build, label, push. A lock file is first made into pinned requirements in the
  checkout (``uv export --frozen`` for ``uv.lock``; ``poetry.lock`` and ``Pipfile.lock`` read
  here). Two builders (:func:`image_builder.oci_image.choose_builder`):

  - **layer** (every app without a Dockerfile or ``packages.txt``): the environment is
    installed with uv and the job's own Python (the job runs in the base image) and pushed as
    one layer on the base image's layers, with a config and manifest written here
    (:mod:`image_builder.layer_build`). No container runtime, no privileges: it runs on any
    runner.
  - **buildah** (the repository's own Dockerfile, or a generated one for ``packages.txt``,
    whose names are checked one by one first): ``buildah build`` and ``buildah push``. Its
    ``RUN`` steps need a user namespace and mounts, so the runner must allow them (privileged,
    or seccomp and AppArmor unconfined with SETUID/SETGID); on one that does not, the job fails
    saying so.

After a new tag, the Flux Receiver is pinged so the rollout need not wait for the next registry
scan. Every step prints one line to stdout: this is a CI log. Secrets come from files, reach
buildah through a 0600 auth file and git through a credential helper's environment, and never
appear on a command line or in the log. The registry password file may hold Harbor's robot JSON
(``{"name": "robot$…", "secret": "…"}``), whose name then is the user: a GitLab variable would
expand the ``$`` of a robot name (:func:`registry_credentials`).

Exit codes: 0 built, re-tagged or skipped; 2 bad arguments; 1 failed (one line on stderr).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from uv import find_uv_bin

from image_builder.dockerfile import (
    DEFAULT_PORT,
    DEPENDENCY_HASH_LABEL,
    BuildPlan,
    newest_first,
    plan_build,
    render_dockerfile,
    select_base_image,
    tag_time,
)
from image_builder.environments import base_interpreter
from image_builder.layer_build import LayerJob, build_layer_image
from image_builder.lockfiles import (
    LOCKED_REQUIREMENTS,
    UV_LOCK,
    LockFileError,
    choose_source,
    count_requirements,
    locked_requirements,
    uv_export_args,
)
from image_builder.oci_image import BUILDERS, choose_builder
from image_builder.process import run_step
from image_builder.system_packages import PACKAGES_FILE, package_names, shown
from nakama.appconfig import CONFIG_FILE, load_app_config
from nakama.clients.git import FULL_SHA, mask_credentials, run_git
from nakama.clients.harbor import parse_robot_file
from nakama.clients.oci import OciClient, check_repository, registry_api_url
from nakama.errors import InvalidInput, NotFound, PermanentError
from nakama.settings import Settings
from nakama.tagging import is_dependency_file

_PROG = "nakama build"
_FILE_MODES = (b"100644", b"100755")  # regular files, as the forges' read_files
_PASSWORD_ENV = "NAKAMA_BUILD_GIT_PASSWORD"  # noqa: S105 - a variable name
_USERNAME_ENV = "NAKAMA_BUILD_GIT_USERNAME"
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USERNAME_ENV}" "${_PASSWORD_ENV}"; }}; f'
)
_ERROR_TAIL_LINES = 20
# Read besides the dependency files (they shape the generated Dockerfile, not the hash).
_ALSO_READ = (CONFIG_FILE, ".python-version")
_FLUX_ATTEMPTS = 3
# What buildah says where the runner refuses it a user namespace or a mount (seccomp's EPERM,
# a disabled user namespace's ENOSPC, newuidmap without its setuid bit, AppArmor's mount denial).
_RUNNER_REFUSED = re.compile(
    r"unshare|CLONE_NEWUSER|newuidmap|newgidmap|user namespace|cannot re-exec"
    r"|mount.*(operation not permitted|permission denied)",
    re.IGNORECASE,
)
RUNNER_REFUSED_HINT = (
    "this runner does not let buildah run a Dockerfile's RUN steps (it refused a user namespace "
    "or a mount): an app's own Dockerfile, or packages.txt, requires a privileged or "
    "seccomp/AppArmor-unconfined runner (docs/cluster-install.md, 'The image builder'); apps "
    "without them are built by the layer builder, which needs no privileges"
)
# robot$nakama-apps+push after GitLab expanded "$nakama" (no such variable, so empty): the
# variable name takes letters, digits and "_", so what is left starts with "-", "." or "+".
_EXPANDED_ROBOT = re.compile(r"^robot[-.+][a-z0-9._+-]*$")


@dataclass(frozen=True)
class Options:
    repo: str
    commit: str
    branch: str
    project: str | None
    expected_hash: str | None
    registry_host: str
    repository: str
    registry_url: str | None
    username: str | None
    password: str | None = field(repr=False)
    tls_verify: bool
    flux_receiver_url: str | None = field(repr=False)  # its path is a secret of its own
    flux_token: str | None = field(repr=False)
    base_image: str
    workdir: Path | None
    git_username: str
    git_password: str | None = field(repr=False)
    dependency_files: tuple[str, ...]
    port: int
    timeout_s: float
    buildah: str
    builder: str = "auto"
    python: str | None = None

    @property
    def image(self) -> str:
        return f"{self.registry_host}/{self.repository}"


@dataclass(frozen=True)
class Checkout:
    """The commit's files: ``context`` is the build context (no ``.git``), ``paths`` every
    regular file in it, ``files`` the contents of those the build reads."""

    workdir: Path
    context: Path
    paths: list[str]
    files: dict[str, bytes]


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Build and push an app's image, unless one with its dependencies exists.",
    )
    add = parser.add_argument
    add("--repo", required=True, help="repository URL or path")
    add("--commit", required=True, help="full commit hash to build")
    add("--branch", "--ref", dest="branch", default=settings.planning.deploy_branch,
        help="branch, for the tag")  # fmt: skip
    add("--project", help="the app's name, for the log")
    add("--dep-hash", help="the dependency hash Nakama computed, to cross-check")
    add("--image", required=True, help="REGISTRY/PROJECT/NAME, without a tag")
    add("--registry-url", help="registry API base URL (default: NAKAMA_HARBOR__URL for its "
        "host, else https://REGISTRY)")  # fmt: skip
    add("--registry-username", help="registry user (default: the name in the password file's "
        "robot JSON, else NAKAMA_HARBOR__USERNAME)")  # fmt: skip
    add("--registry-password-file", type=Path, help="file holding the registry password, or a "
        "robot's JSON with its name and secret (default: NAKAMA_HARBOR__PASSWORD)")  # fmt: skip
    add(
        "--tls-verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require HTTPS with a valid certificate (--no-tls-verify also allows plain HTTP)",
    )
    add("--flux-receiver-url", help="Flux Receiver webhook URL to ping after a new tag")
    add("--flux-receiver-token-file", type=Path, help="Receiver token, to sign the ping (HMAC)")
    add("--base-image", default=settings.flux.base_image, help="base for generated Dockerfiles")
    add("--workdir", type=Path, help="where to check out (default: a temporary directory)")
    add("--git-username", default="nakama", help="HTTPS user name for the repository")
    add("--git-password-file", type=Path, help="file holding the repository password or token")
    add(
        "--dependency-file",
        action="append",
        dest="dependency_files",
        metavar="PATTERN",
        help="dependency file pattern (repeatable; default: the planner's list)",
    )
    add("--port", type=int, default=DEFAULT_PORT, help="port the app listens on in the image")
    add("--timeout-s", type=float, default=settings.builder.build_timeout_s, help="build limit")
    add("--buildah", default="buildah", help="buildah executable")
    add("--builder", choices=BUILDERS, default="auto", help="layer: base image + an "
        "environment layer, no container runtime; buildah: buildah build (needs a runner that "
        "allows it); auto: buildah only for an own Dockerfile or packages.txt")  # fmt: skip
    add("--python", help="the interpreter the layer builder makes the environment from: the "
        "base image's, at its path in the image (default: the one running this)")  # fmt: skip
    return parser


def build_main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the build job, return the exit code."""
    out = out or sys.stdout
    try:
        settings = Settings()
        args = _parser(settings).parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else 2
    except ValidationError as exc:
        _fail(f"bad NAKAMA_* settings in the environment: {exc.error_count()} error(s)")
        return 2
    try:
        options = _options(args, settings)
        run_build(options, out=out)
    except InvalidInput as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:  # a CI job wants one line and an exit code, not a trace
        _fail(str(exc) or type(exc).__name__)
        return 1
    return 0


def run_build(options: Options, *, out: TextIO) -> str:
    """Do the job; returns the tag that now holds the dependencies (built, re-tagged or found)."""
    with _workdir(options.workdir) as workdir:
        git_dir, context = workdir / "git", workdir / "context"
        of = f" of {options.project}" if options.project else ""
        _say(out, "checkout", f"{options.commit[:12]}{of} from {mask_credentials(options.repo)}")
        _check_out(options, git_dir=git_dir, work_tree=context)
        wanted = (*options.dependency_files, *_ALSO_READ)
        checkout = Checkout(workdir, context, *_read_tree(git_dir, options.commit, wanted))

        def plan_at(now: datetime) -> BuildPlan:
            return plan_build(
                files=checkout.files,
                branch=options.branch,
                sha=options.commit,
                now=now,
                dependency_patterns=options.dependency_files,
            )

        plan = plan_at(datetime.now(UTC))
        _say(out, "dependencies", f"{plan.dep_hash} from {', '.join(plan.dependency_files) or '-'}")
        if options.expected_hash and options.expected_hash != plan.dep_hash:
            # Nakama and this job hash different file lists: their settings disagree.
            message = f"Nakama computed dependencies {options.expected_hash}, this build the above"
            _say(out, "warning", f"{message}: compare their NAKAMA_PLANNING__DEPENDENCY_FILES")
        with _registry_client(options) as registry:
            candidates, found = _find(registry, options, plan, out)
            if found is not None and found == candidates[0]:
                _say(out, "skip", f"image {found} already has dependencies {plan.dep_hash}")
                return found
            # The new tag must outrank every tag there is: Flux deploys the newest.
            plan = plan_at(tag_time(datetime.now(UTC), candidates[0] if candidates else None))
            if found is not None:
                digest = registry.tag(options.repository, found, plan.tag)
                message = f"image {found} has dependencies {plan.dep_hash}; tagged it {plan.tag}"
                _say(out, "retag", f"{message} ({digest})")
            else:
                _build_and_push(options, plan, checkout, registry, out)
    _notify_flux(options, f"{options.image}:{plan.tag}", out)
    return plan.tag


# --- the steps ---------------------------------------------------------------------------
def _find(
    registry: OciClient, options: Options, plan: BuildPlan, out: TextIO
) -> tuple[list[str], str | None]:
    """The branch's tags, newest first, and the first of them with the plan's dependencies."""
    try:
        tags = registry.list_tags(options.repository)
    except NotFound:  # nothing pushed to this repository yet
        tags = []
    candidates = newest_first(tags, branch_part=plan.branch_part)
    _say(out, "registry", f"{len(candidates)} tag(s) of {plan.branch_part} in {options.image}")
    found = registry.find_by_label(
        options.repository, DEPENDENCY_HASH_LABEL, plan.dep_hash, newest_first_tags=candidates
    )
    return candidates, found


def _build_and_push(
    options: Options, plan: BuildPlan, checkout: Checkout, registry: OciClient, out: TextIO
) -> None:
    choice = choose_builder(options.builder, checkout.paths)
    if choice.builder == "layer":
        _say(out, "builder", f"layer: {choice.reason}")
        _build_layer(options, plan, checkout, registry, out)
        return
    _say(out, "builder", f"buildah: {choice.reason} (the runner must allow buildah's RUN steps)")
    _build_with_buildah(options, plan, checkout, out)


def _build_layer(
    options: Options, plan: BuildPlan, checkout: Checkout, registry: OciClient, out: TextIO
) -> None:
    files = checkout.files
    python_version = files.get(".python-version", b"").decode(errors="replace").strip()
    base_image = select_base_image(options.base_image, python_version or None)
    toml = files.get(CONFIG_FILE)
    run = load_app_config(None if toml is None else toml.decode(errors="replace")).run
    _pin_lock_file(checkout, options, out)
    source = choose_source(checkout.paths)
    requirements = None
    if source is not None:
        requirements = LOCKED_REQUIREMENTS if source.is_lock else source.file
    ref = f"{options.image}:{plan.tag}"
    _say(out, "build", f"{ref} from {base_image}")
    job = LayerJob(
        repository=options.repository,
        tag=plan.tag,
        labels=plan.labels,
        base_image=base_image,
        registry_host=options.registry_host,
        python=options.python or base_interpreter(None),
        context=checkout.context,
        workdir=checkout.workdir,
        requirements=requirements,
        installed_from=source.file if source is not None else "nothing",
        port=options.port,
        run_command=run,
        created=datetime.now(UTC),
        deadline=time.monotonic() + options.timeout_s,
        timeout_s=options.timeout_s,
        tls_verify=options.tls_verify,
    )
    pushed = build_layer_image(job, registry=registry, out=out)
    _say(out, "pushed", f"{ref} ({pushed.digest}): {pushed.uploaded_bytes} bytes uploaded; base "
         f"layers: {pushed.mounted} mounted, {pushed.copied} copied, {pushed.present} there "
         "already")  # fmt: skip


def _build_with_buildah(options: Options, plan: BuildPlan, checkout: Checkout, out: TextIO) -> None:
    buildah = shutil.which(options.buildah)
    if buildah is None:
        raise PermanentError(f"{options.buildah} is not installed")
    workdir, context, files = checkout.workdir, checkout.context, checkout.files
    if "Dockerfile" in checkout.paths:
        dockerfile = context / "Dockerfile"
        _say(out, "dockerfile", "the repository's own")
    else:
        python_version = files.get(".python-version", b"").decode(errors="replace").strip()
        base_image = select_base_image(options.base_image, python_version or None)
        toml = files.get(CONFIG_FILE)
        run = load_app_config(None if toml is None else toml.decode(errors="replace")).run
        packages: tuple[str, ...] = ()
        if PACKAGES_FILE in checkout.paths:
            text = _content(checkout, PACKAGES_FILE).decode(errors="replace")
            try:
                packages = package_names(text)
            except InvalidInput as exc:  # the commit's content: a failed build, not bad usage
                raise PermanentError(str(exc)) from None
            _say(out, "packages", f"{PACKAGES_FILE}: {shown(packages) if packages else 'none'}")
        _pin_lock_file(checkout, options, out)
        text = render_dockerfile(
            base_image=base_image,
            files=checkout.paths,
            port=options.port,
            run_command=run,
            system_packages=packages,
        )
        dockerfile = workdir / "Dockerfile.nakama"  # outside the context: not copied in
        dockerfile.write_text(text, encoding="utf-8")
        _say(out, "dockerfile", f"generated, from {base_image}")
    ref = f"{options.image}:{plan.tag}"
    deadline = time.monotonic() + options.timeout_s
    common = [] if options.tls_verify else ["--tls-verify=false"]
    with _auth_file(options) as authfile:
        if authfile is not None:
            common += ["--authfile", str(authfile)]
        labels = [
            arg for key, value in plan.labels.items() for arg in ("--label", f"{key}={value}")
        ]
        _say(out, "build", ref)
        _run([buildah, "build", "--file", str(dockerfile), "--tag", ref, *labels, *common,
              str(context)], deadline=deadline, timeout_s=options.timeout_s, out=out)  # fmt: skip
        digest_file = workdir / "digest"
        _say(out, "push", ref)
        _run([buildah, "push", "--digestfile", str(digest_file), *common, ref],
             deadline=deadline, timeout_s=options.timeout_s, out=out)  # fmt: skip
    digest = digest_file.read_text(encoding="utf-8").strip() if digest_file.exists() else "?"
    _say(out, "pushed", f"{ref} ({digest})")
    # The storage is the runner's: leave it as it was (vfs keeps a full copy of every layer).
    subprocess.run([buildah, "rmi", ref], capture_output=True, check=False)


def _content(checkout: Checkout, path: str) -> bytes:
    """A regular file of the checkout: read with the dependency files, or from the context."""
    found = checkout.files.get(path)
    return found if found is not None else (checkout.context / path).read_bytes()


def _pin_lock_file(checkout: Checkout, options: Options, out: TextIO) -> None:
    """Write the lock file's pinned requirements into the context, if the install is from one."""
    source = choose_source(checkout.paths)
    if source is None:
        return
    _say(out, "dependencies", source.describe())
    if not source.is_lock:
        return
    if LOCKED_REQUIREMENTS in checkout.paths:
        raise PermanentError(
            f"the repository has a file {LOCKED_REQUIREMENTS}, the name the build gives the "
            f"requirements pinned from {source.file}: rename it"
        )
    target = checkout.context / LOCKED_REQUIREMENTS
    if source.file == UV_LOCK:
        if "pyproject.toml" not in checkout.paths:
            raise LockFileError(
                f"{UV_LOCK} has no pyproject.toml beside it: commit the pyproject.toml it was "
                "locked from"
            )
        args = uv_export_args(project_dir=str(checkout.context), output=str(target))
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(checkout.workdir),
            "UV_NO_CONFIG": "1",  # a pushed uv.toml must not steer it
            "UV_PYTHON_DOWNLOADS": "never",
            "NO_COLOR": "1",
            "UV_CACHE_DIR": str(checkout.workdir / "uv-cache"),
        }
        deadline = time.monotonic() + min(options.timeout_s, 300)
        result = run_step([find_uv_bin(), *args], out=out, deadline=deadline,
                          cwd=checkout.context, env=env, tail_lines=_ERROR_TAIL_LINES)  # fmt: skip
        if result.timed_out or result.returncode != 0:
            detail = " | ".join(line.strip() for line in result.tail if line.strip())[-800:]
            raise LockFileError(f"{UV_LOCK} could not be read by uv export --frozen: {detail}")
    else:
        target.write_text(locked_requirements(source.file, _content(checkout, source.file)))
    count = count_requirements(target.read_text())
    _say(out, "dependencies", f"{count} package(s) pinned from {source.file}")


def _notify_flux(options: Options, ref: str, out: TextIO) -> None:
    """Ask Flux to rescan now. A failure only delays the rollout to the next scan: warn."""
    if not options.flux_receiver_url:
        return
    body = json.dumps({"image": ref}).encode()
    headers = {"Content-Type": "application/json"}
    if options.flux_token:  # a generic-hmac Receiver checks this; a generic one ignores it
        digest = hmac.new(options.flux_token.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Signature"] = f"sha256={digest}"
    where = urlsplit(options.flux_receiver_url).netloc  # the path is a secret of its own
    problem = ""
    for attempt in range(_FLUX_ATTEMPTS):
        if attempt:
            time.sleep(2**attempt)
        try:
            response = httpx.post(
                options.flux_receiver_url,
                content=body,
                headers=headers,
                timeout=10,
                verify=options.tls_verify,
            )
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
            continue
        if response.is_success:
            _say(out, "notify", f"Flux receiver at {where} answered {response.status_code}")
            return
        problem = f"answer {response.status_code}"
        if response.status_code < 500:
            break
    _say(out, "warning", f"Flux receiver at {where} not reached ({problem}); "
         "Flux will find the tag at its next registry scan")  # fmt: skip


# --- git ---------------------------------------------------------------------------------
def _check_out(options: Options, *, git_dir: Path, work_tree: Path) -> None:
    """Fetch exactly the commit (depth 1) and write its files into ``work_tree``, no ``.git``."""
    for path in (git_dir, work_tree):
        if path.exists():
            shutil.rmtree(path)  # left by an earlier run in the same workdir
    work_tree.mkdir(parents=True)
    run_git(["init", "--quiet", "--bare", str(git_dir)])
    env = _git_auth(options)
    config = ["-c", "credential.helper=", "-c", f"credential.helper={_CREDENTIAL_HELPER}"]
    fetch = [
        *(config if env else []),
        "fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--depth=1",
        "--", options.repo, options.commit,
    ]  # fmt: skip
    run_git(fetch, git_dir=git_dir, env=env, timeout=600)
    run_git(
        [f"--work-tree={work_tree}", "checkout", "--quiet", "--force", "--detach", options.commit],
        git_dir=git_dir,
    )


def _git_auth(options: Options) -> dict[str, str] | None:
    if options.git_password is None:
        return None
    return {_PASSWORD_ENV: options.git_password, _USERNAME_ENV: options.git_username}


def _read_tree(
    git_dir: Path, commit: str, patterns: Iterable[str]
) -> tuple[list[str], dict[str, bytes]]:
    """Every regular file's path at ``commit``, and the contents of those matching ``patterns``."""
    wanted = tuple(patterns)
    listing = run_git(["ls-tree", "-r", "-z", "--full-tree", commit], git_dir=git_dir).stdout
    paths: list[str] = []
    blobs: list[tuple[str, str]] = []
    for entry in listing.split(b"\0"):
        meta, _, raw_path = entry.partition(b"\t")
        fields = meta.split()
        if len(fields) != 3 or fields[0] not in _FILE_MODES:
            continue
        path = raw_path.decode(errors="surrogateescape")
        paths.append(path)
        if is_dependency_file(path, wanted):
            blobs.append((path, fields[2].decode()))
    files: dict[str, bytes] = {}
    if blobs:
        batch = b"".join(f"{oid}\n".encode() for _, oid in blobs)
        out = run_git(["cat-file", "--batch"], git_dir=git_dir, input=batch).stdout
        pos = 0
        for path, _ in blobs:
            end = out.index(b"\n", pos)
            size = int(out[pos:end].split()[2])
            files[path] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
    return paths, files


# --- registry ----------------------------------------------------------------------------
def _registry_client(options: Options) -> OciClient:
    url = options.registry_url or registry_api_url(
        options.registry_host, tls_verify=options.tls_verify
    )
    return OciClient(
        url, username=options.username, password=options.password, verify=options.tls_verify
    )


@contextmanager
def _auth_file(options: Options) -> Iterator[Path | None]:
    """A containers auth file (0600, in a private directory) for the registry, removed after."""
    if options.username is None or options.password is None:
        yield None
        return
    token = base64.b64encode(f"{options.username}:{options.password}".encode()).decode()
    with tempfile.TemporaryDirectory(prefix="nakama-auth-") as tmp:  # mode 0700
        path = Path(tmp) / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"auths": {options.registry_host: {"auth": token}}}, f)
        yield path


# --- processes ---------------------------------------------------------------------------
def _run(args: Sequence[str], *, deadline: float, timeout_s: float, out: TextIO) -> None:
    """Run a buildah step into the log; PermanentError with the end of its output on failure."""
    result = run_step(args, out=out, deadline=deadline, tail_lines=_ERROR_TAIL_LINES)
    if result.timed_out:
        raise PermanentError(f"build timed out after {timeout_s:g}s")
    if result.returncode != 0:
        last = " | ".join([line for line in result.tail if line.strip()][-3:])[-800:]
        message = f"buildah {args[1]} failed ({result.returncode}): {last}"
        if any(_RUNNER_REFUSED.search(line) for line in result.tail):
            message += f" -- {RUNNER_REFUSED_HINT}"
        raise PermanentError(message)


# --- arguments ---------------------------------------------------------------------------


def _options(args: argparse.Namespace, settings: Settings) -> Options:
    commit = args.commit.strip().lower()
    if not FULL_SHA.match(commit):
        raise InvalidInput(f"--commit must be a full hash, got {args.commit!r}")
    if not args.repo or args.repo.startswith("-"):
        raise InvalidInput(f"not a repository URL: {mask_credentials(args.repo)!r}")
    host, repository = _split_image(args.image)
    username, password = registry_credentials(args.registry_username or None,
                                              args.registry_password_file)  # fmt: skip
    registry_url = args.registry_url
    harbor = settings.harbor
    if urlsplit(harbor.url).netloc == host:  # Nakama's own settings name this registry
        registry_url = registry_url or harbor.url
        if username is None and harbor.password is not None:
            username, password = harbor.username, harbor.password.get_secret_value()
    token = _read_secret(args.flux_receiver_token_file, "Flux receiver token")
    git_password = _read_secret(args.git_password_file, "git password")
    for url in (args.registry_url, args.flux_receiver_url):
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise InvalidInput(f"not an http(s) URL: {mask_credentials(url)!r}")
    if not 0 < args.port < 65536 or args.timeout_s <= 0:
        raise InvalidInput("--port must be 1-65535 and --timeout-s positive")
    return Options(
        repo=args.repo,
        commit=commit,
        branch=args.branch,
        project=args.project,
        expected_hash=args.dep_hash,
        registry_host=host,
        repository=repository,
        registry_url=registry_url,
        username=username,
        password=password,
        tls_verify=args.tls_verify,
        flux_receiver_url=args.flux_receiver_url,
        flux_token=token,
        base_image=args.base_image,
        workdir=args.workdir,
        git_username=args.git_username,
        git_password=git_password,
        dependency_files=tuple(args.dependency_files or settings.planning.dependency_files),
        port=args.port,
        timeout_s=args.timeout_s,
        buildah=args.buildah,
        builder=args.builder,
        python=args.python,
    )


def _split_image(image: str) -> tuple[str, str]:
    """``REGISTRY/PROJECT/NAME`` → (registry host, repository path)."""
    host, _, repository = image.partition("/")
    if not repository or not ("." in host or ":" in host or host == "localhost"):
        raise InvalidInput(f"--image must be REGISTRY/PROJECT/NAME, got {image!r}")
    if "@" in repository or ":" in repository:
        raise InvalidInput(f"--image must not name a tag or digest, got {image!r}")
    return host, check_repository(repository)


def registry_credentials(username: str | None, path: Path | None) -> tuple[str | None, str | None]:
    """The registry user and password: the password file holds the secret alone (the user is
    ``username``), or a robot's JSON (:func:`nakama.clients.harbor.robot_file`), whose name is
    the user. GitLab expands ``$NAME`` in variables that are not raw, so a robot name given as
    ``robot$nakama-apps+push`` in a plain variable arrives as ``robot-apps+push``: with a
    robot file the file's name wins over ``username``, and a name that looks expanded is
    refused with the reason."""
    if path is None:
        if username is not None:
            raise InvalidInput("--registry-username needs --registry-password-file")
        return None, None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the registry password file {path}: {exc.strerror}"
        ) from None
    try:
        robot = parse_robot_file(text)
    except ValueError as exc:
        raise InvalidInput(f"the registry password file {path}: {exc}") from None
    if robot is not None and robot[0] is not None:
        return robot[0], robot[1]
    secret = robot[1] if robot is not None else _read_secret(path, "registry password")
    if username is None:
        raise InvalidInput(
            f"the registry password file {path} names no user: give --registry-username, or "
            'write the robot\'s JSON ({"name": ..., "secret": ...}) into the file'
        )
    if _EXPANDED_ROBOT.match(username):
        raise InvalidInput(
            f"registry user {username!r} looks like a Harbor robot name whose '$...' part GitLab "
            "expanded away: mark the variable raw (untick 'Expand variable reference'), or put "
            "the robot's JSON into the password file (nakama cluster setup --push-robot-file)"
        )
    return username, secret


def _read_secret(path: Path | None, what: str) -> str | None:
    """One line from a mounted secret file (None if none is given); re-read every run so
    rotation needs no restart."""
    if path is None:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not value or "\n" in value:
        raise InvalidInput(f"the {what} file {path} must hold one non-empty line")
    return value


@contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.absolute()
        return
    with tempfile.TemporaryDirectory(prefix="nakama-build-") as tmp:
        yield Path(tmp)


def _say(out: TextIO, step: str, message: str) -> None:
    out.write(f"{step}: {message}\n")
    out.flush()


def _fail(message: str) -> None:
    one_line = " ".join(mask_credentials(message).split())
    print(f"{_PROG}: error: {one_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(build_main())
