"""``nakama flux render`` and ``nakama flux validate``: the manifest renderer and the schema check
from a shell, for operators bootstrapping a GitOps repository (``render --gateway`` writes the
Service every app's ``/_nakama/`` Ingress needs) and for CI on deploy/ manifests.

Exit codes: 0 done, 2 bad input (a name that cannot be an app, a missing path, bad arguments),
1 anything else (the files could not be written, or ``validate`` found problems).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from flux.gateway import GATEWAY_SERVICE, gateway_file, render_gateway_service
from flux.manifests import AppProject, GitOpsLayout, render_files, to_yaml
from flux.validate import KUBERNETES_VERSION, validate_file
from nakama.access import DEFAULT_VISIBILITY, VISIBILITIES
from nakama.errors import InvalidInput
from nakama.limits import effective_limits
from nakama.settings import Settings


class _Usage(Exception):
    """argparse has printed the problem; leave with this exit code."""

    def __init__(self, code: int) -> None:
        self.code = code


def render_main(argv: list[str] | None = None) -> int:
    """Render one app's files, or the apps' shared nakama-gateway Service, or both, into
    ``--out`` (as paths of the GitOps repository)."""
    prog = "nakama flux render"
    parser = argparse.ArgumentParser(prog=prog, description=render_main.__doc__)
    parser.add_argument("--project", help="the app's name")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help=f"the Service {GATEWAY_SERVICE} every app's /_nakama/ Ingress routes to (once)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the files to")
    parser.add_argument("--visibility", choices=VISIBILITIES, default=DEFAULT_VISIBILITY)
    parser.add_argument("--branch", help="deploy branch (default: the planning deploy branch)")
    parser.add_argument("--tag", help="first image tag (default: a placeholder Flux replaces)")
    parser.add_argument(
        "--commit",
        help="full commit hash to run until the first reload (without it the init container "
        "has no commit to sync until a reload names one)",
    )
    parser.add_argument("--repo-url", help="HTTPS clone URL (default: from the GitLab settings)")
    parser.add_argument("--namespace", help="namespace (default: the Kubernetes settings')")
    # The app's limits: the settings' defaults (NAKAMA_LIMITS__*) with these on top.
    parser.add_argument("--memory-mib", type=int, help="memory limit of the app container, MiB")
    parser.add_argument("--cpu", type=float, help="CPU limit of the app container, cores")
    parser.add_argument("--disk-mib", type=int, help="size of the data volume, MiB")
    parser.add_argument("--replicas", type=int, help="pods (the autoscaler's minimum)")
    parser.add_argument("--autoscale-max", type=int, help="most pods a CPU autoscaler may run")
    parser.add_argument("--validate", action="store_true", help="check the files before writing")
    parser.add_argument("--reference-dir", type=Path, help="folder holding flux/crds/")
    try:
        args = _parse(parser, argv)
        if not args.project and not args.gateway:
            parser.print_usage(sys.stderr)
            return _fail(prog, "give --project, --gateway or both", 2)
        settings = Settings()
        namespace = args.namespace or settings.kubernetes.namespace
        files: dict[str, str] = {}
        if args.project:
            gitlab = settings.gitlab
            group_url = f"{gitlab.url.rstrip('/')}/{gitlab.group}"
            overrides = {
                key: getattr(args, key)
                for key in ("memory_mib", "cpu", "disk_mib", "replicas", "autoscale_max")
                if getattr(args, key) is not None
            }
            project = AppProject(
                name=args.project,
                repo_url=args.repo_url or f"{group_url}/{args.project}.git",
                branch=args.branch or settings.planning.deploy_branch,
                tag=args.tag,
                initial_commit=args.commit,
                visibility=args.visibility,
                limits=effective_limits(settings.limits, overrides),
            )
            files = render_files(
                project, settings.flux, harbor=settings.harbor, namespace=namespace
            )
        if args.gateway:
            service = render_gateway_service(settings.flux, namespace=namespace)
            files[gateway_file(GitOpsLayout().kustomizations_path)] = to_yaml([service])
    except _Usage as exc:
        return exc.code
    except (InvalidInput, ValidationError) as exc:
        return _fail(prog, str(exc), 2)
    if args.project and not args.commit:
        print(
            f"{prog}: warning: no --commit: the Deployment's init container has no commit to "
            "sync, so its pods fail to start until a reload names one (nakama reload restart "
            "--commit ...); give --commit <full hash> of the code the app should run",
            file=sys.stderr,
        )
    try:
        if args.validate and (problems := _check_files(files, args.reference_dir)):
            for problem in problems:
                print(problem, file=sys.stderr)
            return _fail(prog, f"{len(problems)} problem(s); nothing written", 1)
        for relative, text in files.items():
            target = args.out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(relative)
    except Exception as exc:  # one line and an exit code, not a trace
        return _fail(prog, str(exc) or type(exc).__name__, 1)
    return 0


def validate_main(argv: list[str] | None = None) -> int:
    """Validate YAML files (folders: every *.yaml / *.yml below) against the reference schemas."""
    prog = "nakama flux validate"
    parser = argparse.ArgumentParser(prog=prog, description=validate_main.__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders")
    parser.add_argument("--reference-dir", type=Path, help="folder holding flux/crds/")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    try:
        args = _parse(parser, argv)
    except _Usage as exc:
        return exc.code
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        return _fail(prog, f"no such file or folder: {', '.join(missing)}", 2)
    try:
        problems = [
            problem
            for path in _yaml_files(args.paths)
            for problem in validate_file(
                path, reference_dir=args.reference_dir, kubernetes_version=args.kubernetes_version
            )
        ]
    except Exception as exc:
        return _fail(prog, str(exc) or type(exc).__name__, 1)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def _check_files(files: dict[str, str], reference_dir: Path | None) -> list[str]:
    """Validate the rendered text as written, so a YAML slip shows up too."""
    with tempfile.TemporaryDirectory(prefix="nakama-flux-") as tmp:
        problems: list[str] = []
        for relative, text in files.items():
            path = Path(tmp) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            found = validate_file(path, reference_dir=reference_dir)
            problems += [p.replace(str(path), relative, 1) for p in found]
        return problems


def _yaml_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        raise _Usage(exc.code if isinstance(exc.code, int) else 2) from None


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {' '.join(message.split())[:500]}", file=sys.stderr)
    return code
