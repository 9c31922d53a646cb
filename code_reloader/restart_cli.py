"""``nakama reload restart``: restart one app's Deployment on a commit, from a pipeline job.

The code-reloader pipeline (``reload_via = "gitlab-pipeline"``) runs this in a job; the direct
path calls :func:`code_reloader.restart.restart_app` itself. Credentials come from ``--kubeconfig``,
else the pod's service account when ``KUBERNETES_SERVICE_HOST`` is set, else ``$KUBECONFIG`` or
``~/.kube/config``; never from the command line, where other users of the machine could read them.

Exit codes: 0 restarted (and rolled out, with ``--wait``), 2 bad arguments, 1 the restart or the
rollout failed (one line on stderr, no token in it).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from code_reloader.restart import restart_app, wait_for_rollout
from nakama.clients.git import mask_credentials
from nakama.clients.kubernetes import api_client
from nakama.errors import InvalidInput
from nakama.names import validate_project_name
from nakama.settings import Settings

_PROG = "nakama reload restart"


def _parser(settings: Settings) -> argparse.ArgumentParser:
    kube = settings.kubernetes
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Restart an app's Deployment so that its pods sync and run COMMIT.",
    )
    parser.add_argument("--project", required=True, help="project name = Deployment name")
    parser.add_argument("--commit", required=True, help="full commit hash to run")
    parser.add_argument(
        "--pipeline",
        type=int,
        help="id of the Nakama pipeline of this reload (weighed against a newer build's image)",
    )
    parser.add_argument(
        "--namespace", default=kube.namespace, help=f"default: {kube.namespace} (settings)"
    )
    parser.add_argument(
        "--method",
        choices=("patch", "delete-pods"),
        default=kube.restart_method,
        help=f"patch the pod template, or delete the pods; default: {kube.restart_method}",
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the rollout is done (default) or return after the restart",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the rollout"
    )
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig file instead of in-cluster")
    parser.add_argument("--context", help="kubeconfig context; default: the current one")
    return parser


def restart_main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), restart, optionally wait; the exit code."""
    try:
        settings = Settings()
    except ValidationError as exc:
        _fail(f"invalid settings: {exc.errors()[0].get('msg', 'invalid value')}")
        return 2
    try:
        args = _parser(settings).parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else 2
    try:
        name = validate_project_name(args.project)
        with api_client(kubeconfig=args.kubeconfig, context=args.context) as api:
            result = restart_app(
                api,
                namespace=args.namespace,
                name=name,
                commit=args.commit,
                method=args.method,
                now=datetime.now().astimezone(),
                pipeline=args.pipeline,
            )
            how = {
                "patched": f"pod template patched, generation {result.generation}",
                "patched-commit": f"commit annotation patched, generation {result.generation}",
                "deleted-pods": f"{len(result.deleted_pods)} pods deleted",
            }[result.action]
            print(f"restarted deployment {args.namespace}/{name} at {args.commit[:12]} ({how})")
            if args.wait:
                status = wait_for_rollout(
                    api, namespace=args.namespace, name=name, timeout_s=args.timeout
                )
                print(f"deployment {args.namespace}/{name}: {status.message}")
    except InvalidInput as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:  # a pipeline job wants one line and an exit code, not a trace
        _fail(str(exc) or type(exc).__name__)
        return 1
    return 0


def _fail(message: str) -> None:
    one_line = " ".join(mask_credentials(message).split())
    print(f"{_PROG}: error: {one_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(restart_main())
