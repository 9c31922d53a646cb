"""Render one app's cluster-mode manifests: the workload Flux applies and the image automation
that keeps its tag current. Pure: values in, plain dicts / YAML text out; writing is the caller's.

GitOps layout (paths relative to the GitOps repository root)::

    <apps_path>/<name>/kustomization.yaml      kustomize config listing the files below
    <apps_path>/<name>/deployment.yaml, ...    workload + ImageRepository/Policy/UpdateAutomation
    <layout.kustomizations_path>/<name>.yaml   the Flux Kustomization applying the folder above

The Flux Kustomization sits outside the folder it applies so that each object has one owner: the
Kustomization ``flux-system/nakama-apps`` (deploy/flux/apps-kustomization.yaml, path
``./clusters/nakama/apps``) applies the per-app Kustomizations, each of which applies and prunes
one app. No other Kustomization may have a parent folder of either as its path (kustomize-
controller walks folders recursively, so ``flux bootstrap --path=clusters/nakama`` would apply
every per-app Kustomization a second time, with two owners). Removing both paths deletes the app.

The workload (the Deployment, and its autoscaler) is committed only once the app has an image
(:func:`render_files` with ``workload=False`` leaves it out, and backend.cluster.runtime adds it
with the first build's tag): a Deployment pointing at an image that does not exist would sit in
ImagePullBackOff and fail the Kustomization's health check until the first build was done.

The app container's probes follow ``nakama.toml`` (:func:`probe_for`): its ``health_path`` as an
HTTP probe (Kubernetes counts 200-399 as healthy), Streamlit's ``/_stcore/health`` for an app on
the default command, and a TCP probe (the port accepts connections) for an app with its own
``run`` command and no ``health_path``: local mode counts any answer below 500 as up, and the
closest Kubernetes has to that without running a program in the app's container is a connection.

Which commit's code runs is the pod-template annotation ``nakama.dev/commit``. The manifests never
set it (Flux would undo every reload at its next reconcile); the code reloader's restart patch
does, and the init container reads it through the downward API. Until the first reload it is
absent and the init container syncs ``initial_commit``, baked in at render time. The app container
then runs the image's CMD with the synced worktree as its working directory, so a code-only push
needs a restart, never a build; the copy of the code inside the image goes unused.

The app author's environment variables are the Secret ``<name>-env`` (:func:`env_secret_name`),
which backend.cluster.runtime writes from the database; the app container reads all of it
(``envFrom``, optional so that an app starts before it exists). A change restarts the app.

Who may open the app follows its visibility: :mod:`flux.gateway` renders its Ingresses (and, for
Traefik, a Middleware). Those files, and the folder's kustomization.yaml that lists them, are
:func:`gateway_paths`: the ones to rewrite when the visibility changes. Who may connect to its
pods at all is its NetworkPolicy (:mod:`flux.network`): the Ingress controller, on the app port.

What the app may use is its :class:`nakama.limits.AppLimits` (:mod:`flux.resources`): the app
container's resources, the Deployment's replicas or a HorizontalPodAutoscaler, and the size of
its data volume ``<name>-data``, mounted at ``/data`` (``$DATA_DIR``, with ``$HOME`` below it).
The files that follow the limits are :func:`limits_paths`. The data volume is kept out of Flux's
garbage collection, so that no GitOps change (a hand edit, a reverted commit, an older Nakama
rewriting the folder) can delete an app's data; backend.cluster.runtime deletes it with the app.
The code volume ``<name>-code`` holds only synced worktrees and goes with the manifests.

Every pod runs under the "restricted" Pod Security Standard (tests/pss.py checks each control).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import LiteralScalarString

from flux.gateway import GATEWAY_SERVICE, app_ingresses, gateway_problem
from flux.network import NETWORKING_API, ingress_peer, policy_spec
from flux.resources import (
    AUTOSCALING_API,
    DATA_HOME,
    DATA_ROOT,
    PRUNE_ANNOTATION,
    AccessMode,
    Resources,
    autoscaler_spec,
    claim_spec,
    colocation,
    may_run_several,
    mib_quantity,
    quantity_mib,
    replicas_spec,
)
from nakama.access import DEFAULT_VISIBILITY
from nakama.build_record import MOUNT as BUILDS_MOUNT
from nakama.build_record import PIPELINE_ANNOTATION, builds_config_map
from nakama.clients.git import FULL_SHA
from nakama.errors import InvalidInput
from nakama.limits import AppLimits, effective_limits
from nakama.names import validate_project_name
from nakama.settings import FluxSettings, HarborSettings, LimitsSettings
from nakama.tagging import TAG_PATTERN, image_tag

COMMIT_ANNOTATION = "nakama.dev/commit"
IMAGE_API = "image.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
KUSTOMIZE_CONFIG_API = "kustomize.config.k8s.io/v1beta1"
CODE_ROOT = "/code"  # the volume; the synced tree is CODE_ROOT/current -> .worktrees/<sha>
TOKEN_FILE = "/var/run/nakama/git-token"  # noqa: S105 - a path, the token is in a Secret
# The app's git read credentials: Secret ``<name>-git`` (see :func:`git_secret_name`), written by
# backend.cluster.runtime from a GitLab deploy token; the keys are these two.
GIT_USERNAME_KEY = "username"
GIT_TOKEN_KEY = "token"  # noqa: S105 - a key name
# The init container's one shell line: Kubernetes cannot default an env var, sh can. Values come
# from the environment, so the script is the same for every app.
# It first makes $HOME on the data volume: the volume's root is the pod's (fsGroup), so the app
# could, but nothing in the app would make $HOME itself before writing its dotfiles there.
_SYNC_SCRIPT = (
    f"mkdir -p {DATA_HOME} && "
    'exec nakama reload sync --repo "$NAKAMA_REPO"'
    ' --commit "${NAKAMA_COMMIT:-${NAKAMA_INITIAL_COMMIT:?no commit to sync: set the'
    f' {COMMIT_ANNOTATION} pod-template annotation}}}}"'
    ' --pipeline "${NAKAMA_PIPELINE:-}" --image-tag "${NAKAMA_IMAGE_TAG:-}"'
    f" --builds {BUILDS_MOUNT}"
    f" --root {CODE_ROOT} --link current"
    f' --username "$NAKAMA_GIT_USERNAME" --password-file {TOKEN_FILE}'
)
_UID = 10001  # the image builder's APP_USER; fsGroup gives it the code volume
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_BRANCH_GROUP = "(?P<branch>[A-Za-z0-9_.-]+)"
# The oldest possible build: every real build's tag sorts after it, so Flux replaces it at once.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STREAMLIT_HEALTH_PATH = "/_stcore/health"  # Streamlit's own: 200 once the server is up
WORKLOAD_FILES = ("deployment.yaml", "horizontalpodautoscaler.yaml")


def probe_for(*, health_path: str | None, custom_run: bool) -> str | None:
    """The probe path of an app whose ``nakama.toml`` says ``health_path`` (None: not given)
    and has (``custom_run``) or has not its own ``run`` command; None means a TCP probe."""
    if health_path is not None:
        return health_path
    return None if custom_run else STREAMLIT_HEALTH_PATH


@dataclass(frozen=True)
class GitOpsLayout:
    """Cluster-wide choices FluxSettings does not hold (yet); defaults follow flux bootstrap."""

    source_name: str = "gitops"  # GitRepository of the GitOps repository (needs write access)
    source_namespace: str = "flux-system"
    # applied by the Kustomization flux-system/nakama-apps (deploy/flux/apps-kustomization.yaml)
    kustomizations_path: str = "clusters/nakama/apps"
    pull_secret: str = "harbor-pull"  # noqa: S105 - the name of the pull robot's Secret
    author_name: str = "Nakama"
    author_email: str = "nakama@users.noreply.nakama.dev"
    tls_secret: str | None = None  # e.g. a wildcard certificate for *.<app_domain>; None = HTTP
    storage_class: str | None = None  # None = the cluster's default StorageClass
    # Access mode of every app's two volumes, code and data, for the life of the app (a claim's
    # access modes cannot change). ReadWriteOnce works on any StorageClass; the pods of an app
    # with more than one replica are then kept on one node, where they share the volumes.
    # ReadWriteMany (NFS, CephFS, ...: set storage_class to such a class) lets them spread.
    volume_access_mode: AccessMode = "ReadWriteOnce"
    # Who may connect to app pods (flux.network): the Ingress controller's namespace and pod
    # labels; None = the usual ones of FluxSettings.ingress_controller (ingress-nginx: namespace
    # ingress-nginx, pods app.kubernetes.io/name=ingress-nginx; traefik: traefik, traefik).
    ingress_namespace_labels: Mapping[str, str] | None = None
    ingress_pod_labels: Mapping[str, str] | None = None
    # Seconds between automation runs; it also runs whenever its ImagePolicy picks a new tag.
    automation_interval_s: int = 300
    # Seconds between Kustomization reconciles (drift repair). A new GitOps commit is applied as
    # soon as the GitRepository has fetched it: within seconds when GitLab's push hook on the
    # GitOps project calls the Receiver flux-system/gitops (deploy/flux/receiver-gitops.yaml),
    # else at the GitRepository's next poll (its interval, 1m).
    kustomization_interval_s: int = 600


@dataclass(frozen=True)
class AppProject:
    """One app as the cluster sees it. ``image_repository`` None = derived from HarborSettings."""

    name: str
    repo_url: str  # GitLab HTTPS clone URL the init container fetches from
    branch: str = "main"
    tag: str | None = None  # first image tag; None = a placeholder older than any build
    initial_commit: str | None = None  # full sha synced until a reload sets the annotation
    image_repository: str | None = None
    port: int = 8501  # where the image's CMD listens (the builder's default port)
    # The probes' HTTP path; None: a TCP probe (see :func:`probe_for`)
    health_path: str | None = STREAMLIT_HEALTH_PATH
    # None = the image's CMD (the builder writes nakama.toml's ``run`` or Streamlit on app.py
    # there); it resolves relative paths against the synced code, the working directory.
    command: tuple[str, ...] | None = None
    resources: Resources = field(default_factory=Resources)  # the requests; limits: below
    storage: str = "1Gi"  # the code volume (a few worktrees); the data volume is limits.disk_mib
    visibility: str = DEFAULT_VISIBILITY  # private, internal or public (nakama.access)
    limits: AppLimits = field(default_factory=lambda: effective_limits(LimitsSettings()))


def image_repository(name: str, harbor: HarborSettings) -> str:
    """``<harbor host>/<harbor project>/<name>``: where the image builder pushes the app."""
    return f"{urlsplit(harbor.url).netloc or harbor.url}/{harbor.project}/{name}"


def tag_filter_pattern(branch: str) -> str:
    """TAG_PATTERN with its branch group fixed to ``branch`` as ``image_tag`` spells it."""
    if _BRANCH_GROUP not in TAG_PATTERN:
        raise RuntimeError("TAG_PATTERN changed; update flux.manifests.tag_filter_pattern")
    prefix = image_tag(branch=branch, sha="0" * 40, now=_EPOCH).rsplit("-", 2)[0]
    # The prefix holds only [A-Za-z0-9_.-]; of these only "." means something to RE2.
    return TAG_PATTERN.replace(_BRANCH_GROUP, prefix.replace(".", r"\."), 1)


def app_dir(name: str, settings: FluxSettings) -> str:
    """The app's folder in the GitOps repository, without a leading ``./``."""
    return f"{settings.apps_path.strip('/')}/{name}"


def git_secret_name(name: str) -> str:
    """The Secret holding the app's git read credentials (keys ``username`` and ``token``)."""
    return f"{name}-git"


def env_secret_name(name: str) -> str:
    """The Secret holding the app's environment variables, one key per variable."""
    return f"{name}-env"


def data_claim_name(name: str) -> str:
    """The app's data volume (``$DATA_DIR``), kept across deploys and deleted with the app."""
    return f"{name}-data"


def limits_paths(name: str, settings: FluxSettings) -> tuple[str, ...]:
    """The app's GitOps files that follow its limits (present or not, as the autoscaler is only
    there when the limits ask for one). kustomization.yaml lists them too, but it also lists the
    gateway's files, so a limits change edits its list rather than rendering it anew."""
    folder = app_dir(name, settings)
    names = ("deployment.yaml", "horizontalpodautoscaler.yaml", "persistentvolumeclaim-data.yaml")
    return tuple(f"{folder}/{n}" for n in names)


def gateway_paths(name: str, settings: FluxSettings) -> tuple[str, ...]:
    """The app's GitOps files that follow its visibility (present or not, as the Middleware is
    only there for a guarded app on Traefik), kustomization.yaml included as it lists them.
    Nothing else in them changes with the visibility, nor do they hold the image tag."""
    folder = app_dir(name, settings)
    names = ("ingress.yaml", f"ingress-{GATEWAY_SERVICE}.yaml", "middleware.yaml")
    return (*(f"{folder}/{n}" for n in names), f"{folder}/kustomization.yaml")


def render_manifests(
    project: AppProject,
    settings: FluxSettings,
    *,
    harbor: HarborSettings,
    namespace: str,
    layout: GitOpsLayout | None = None,
) -> list[dict[str, Any]]:
    """Every API object of one app, in apply order. Raises InvalidInput for a bad project."""
    lay = layout or GitOpsLayout()
    problem = _problem(project, namespace) or gateway_problem(project.visibility, settings)
    if problem:
        raise InvalidInput(f"invalid {problem}")
    name, folder = project.name, f"./{app_dir(project.name, settings)}"
    host = f"{name}.{settings.app_domain}"
    repository = project.image_repository or image_repository(name, harbor)
    tag = project.tag or image_tag(branch=project.branch, sha="0" * 40, now=_EPOCH)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "nakama"}

    def obj(api: str, kind: str, spec: dict[str, Any], obj_name: str = name) -> dict[str, Any]:
        meta = {"name": obj_name, "namespace": namespace, "labels": dict(labels)}
        return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}

    source = {"kind": "GitRepository", "name": lay.source_name, "namespace": lay.source_namespace}
    mode, storage_class = lay.volume_access_mode, lay.storage_class
    code = claim_spec(project.storage, access_mode=mode, storage_class=storage_class)
    disk = mib_quantity(project.limits.disk_mib)
    data = obj(
        "v1",
        "PersistentVolumeClaim",
        claim_spec(disk, access_mode=mode, storage_class=storage_class),
        data_claim_name(name),
    )
    data["metadata"]["annotations"] = {PRUNE_ANNOTATION: "disabled"}
    port = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    service = {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name}, "ports": [port]}
    scan: dict[str, Any] = {"image": repository}
    scan["interval"] = _duration(settings.image_scan_interval_s)
    scan["secretRef"] = {"name": lay.pull_secret}
    if urlsplit(harbor.url).scheme == "http":
        scan["insecure"] = True
    policy = {
        "imageRepositoryRef": {"name": name},
        "filterTags": {"pattern": tag_filter_pattern(project.branch), "extract": "$ts"},
        "policy": {"numerical": {"order": "asc"}},
    }
    author = {"name": lay.author_name, "email": lay.author_email}
    automation = {
        "interval": _duration(lay.automation_interval_s),
        "sourceRef": dict(source),
        "git": {
            "checkout": {"ref": {"branch": settings.gitops_branch}},
            "commit": {"author": author, "messageTemplate": _commit_message(name)},
            "push": {"branch": settings.gitops_branch},
        },
        "update": {"path": folder, "strategy": "Setters"},
        "policySelector": {"matchLabels": {"app.kubernetes.io/name": name}},
    }
    kustomization = {
        "interval": _duration(lay.kustomization_interval_s),
        "retryInterval": "1m",
        "timeout": "5m",
        "path": folder,
        "prune": True,
        "wait": True,
        "sourceRef": dict(source),
    }
    marker = f'{{"$imagepolicy": "{namespace}:{name}"}}'
    pod = _pod(project, image=(repository, tag), marker=marker, settings=settings, lay=lay)
    deployment = {
        **replicas_spec(project.limits),
        "revisionHistoryLimit": 3,
        # Old and new pods never run side by side: they would share the volumes, and a new
        # pod's sync would swap the code under the old ones.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    routes = app_ingresses(
        name,
        host=host,
        namespace=namespace,
        visibility=project.visibility,
        settings=settings,
        tls_secret=lay.tls_secret,
        meta={"name": name, "namespace": namespace, "labels": dict(labels)},
    )
    autoscaler = autoscaler_spec(name, project.limits)
    peer = ingress_peer(
        settings.ingress_controller,
        namespace_labels=lay.ingress_namespace_labels,
        pod_labels=lay.ingress_pod_labels,
    )
    return [
        obj("v1", "PersistentVolumeClaim", code, f"{name}-code"),
        data,
        obj("apps/v1", "Deployment", deployment),
        *([obj(AUTOSCALING_API, "HorizontalPodAutoscaler", autoscaler)] if autoscaler else []),
        obj("v1", "Service", service),
        obj(NETWORKING_API, "NetworkPolicy", policy_spec(name, port=project.port, peer=peer)),
        *routes,
        obj(IMAGE_API, "ImageRepository", scan),
        obj(IMAGE_API, "ImagePolicy", policy),
        obj(IMAGE_API, "ImageUpdateAutomation", automation),
        obj(KUSTOMIZE_API, "Kustomization", kustomization),
    ]


def render_files(
    project: AppProject,
    settings: FluxSettings,
    *,
    harbor: HarborSettings,
    namespace: str,
    layout: GitOpsLayout | None = None,
    workload: bool = True,
) -> dict[str, str]:
    """GitOps-repository path -> YAML text, one object per file, sorted by path. ``workload``
    False leaves out the Deployment and its autoscaler (:data:`WORKLOAD_FILES`), for an app
    that has no image yet."""
    lay = layout or GitOpsLayout()
    folder = app_dir(project.name, settings)
    files: dict[str, str] = {}
    listed: list[str] = []
    for doc in render_manifests(project, settings, harbor=harbor, namespace=namespace, layout=lay):
        if doc["apiVersion"] == KUSTOMIZE_API:
            files[f"{lay.kustomizations_path.strip('/')}/{project.name}.yaml"] = to_yaml([doc])
        else:
            name = _file_name(doc, project.name, taken=listed)
            if not workload and name in WORKLOAD_FILES:
                continue
            listed.append(name)
            files[f"{folder}/{listed[-1]}"] = to_yaml([doc])
    files[f"{folder}/kustomization.yaml"] = kustomize_config(listed)
    return dict(sorted(files.items()))


def kustomize_config(resources: Sequence[str]) -> str:
    """The app folder's kustomization.yaml, listing ``resources`` (file names) in order."""
    config = {"apiVersion": KUSTOMIZE_CONFIG_API, "kind": "Kustomization"}
    return to_yaml([{**config, "resources": list(resources)}])


def config_resources(text: str) -> list[str]:
    """The file names a kustomization.yaml lists."""
    doc = YAML(typ="safe", pure=True).load(text) or {}
    return [str(r) for r in doc.get("resources") or []]


@dataclass(frozen=True)
class DeploymentPins:
    """What a committed deployment.yaml holds that a re-render must keep: the image (Flux's
    image automation owns its tag) and the commit baked in for the time before a reload."""

    image_repository: str
    tag: str
    initial_commit: str | None
    health_path: str | None = STREAMLIT_HEALTH_PATH  # None: a TCP probe


def deployment_pins(text: str) -> DeploymentPins:
    """Read :class:`DeploymentPins` back from a deployment.yaml this module rendered."""
    doc = YAML(typ="safe", pure=True).load(text) or {}
    pod = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
    apps = [c for c in pod.get("containers") or [] if c.get("name") == "app"]
    if not apps or ":" not in str(apps[0].get("image", "")).rsplit("/", 1)[-1]:
        raise InvalidInput("deployment.yaml: no app container with a tagged image")
    repository, _, tag = str(apps[0]["image"]).rpartition(":")
    commit = None
    for container in pod.get("initContainers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "NAKAMA_INITIAL_COMMIT" and env.get("value"):
                commit = str(env["value"])
    probe = apps[0].get("readinessProbe") or {}
    path = (probe.get("httpGet") or {}).get("path") if "tcpSocket" not in probe else None
    return DeploymentPins(
        image_repository=repository,
        tag=tag,
        initial_commit=commit,
        health_path=str(path) if path else None,
    )


def grown_claim(text: str, wanted: str) -> str | None:
    """A committed PersistentVolumeClaim's YAML with its size raised to ``wanted``, or None when
    it is that size or larger already (a claim cannot shrink) or its size is not in binary
    units. Nothing else changes: a claim's access modes and class are fixed once it exists."""
    doc = YAML(typ="safe", pure=True).load(text) or {}
    requests = doc.get("spec", {}).get("resources", {}).get("requests", {})
    have, want = quantity_mib(str(requests.get("storage", ""))), quantity_mib(wanted)
    if have is None or want is None or want <= have:
        return None
    requests["storage"] = wanted
    return to_yaml([doc])


def _file_name(doc: dict[str, Any], name: str, *, taken: Sequence[str]) -> str:
    """``<kind>.yaml``; a second object of a kind adds what its name has beyond the app's
    (``ingress-nakama-gateway.yaml`` for ``<name>.nakama-gateway``)."""
    kind = str(doc["kind"]).lower()
    if f"{kind}.yaml" not in taken:
        return f"{kind}.yaml"
    suffix = str(doc["metadata"]["name"]).removeprefix(name).lstrip(".-")
    return f"{kind}-{suffix}.yaml"


def to_yaml(docs: Sequence[dict[str, Any]]) -> str:
    """Block-style YAML, ``---`` between documents, keys in insertion order, comments kept."""
    yaml = YAML(typ="rt", pure=True)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold a line: the setter marker must stay on the image line
    yaml.representer.ignore_aliases = lambda _data: True  # shared values are written out in full
    out = io.StringIO()
    yaml.dump_all(list(docs), out)
    return out.getvalue()


def _pod(
    project: AppProject,
    *,
    image: tuple[str, str],
    marker: str,
    settings: FluxSettings,
    lay: GitOpsLayout,
) -> dict[str, Any]:
    """The pod: ``sync-code`` puts the commit on the volume, then ``app`` runs it."""
    tmp = "/tmp"  # noqa: S108 - a private emptyDir; the init container's HOME for git
    mounts = [
        {"name": "code", "mountPath": CODE_ROOT},
        {"name": "data", "mountPath": DATA_ROOT},
        {"name": "tmp", "mountPath": tmp},
    ]
    token_mount = {"name": "git-token", "mountPath": "/var/run/nakama", "readOnly": True}
    builds_mount = {"name": "builds", "mountPath": BUILDS_MOUNT, "readOnly": True}
    home = {"name": "HOME", "value": tmp}
    locked_down: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
    }
    locked_down["capabilities"] = {"drop": ["ALL"]}
    annotation = {"fieldPath": f"metadata.annotations['{COMMIT_ANNOTATION}']"}
    secret = git_secret_name(project.name)
    username = {"secretKeyRef": {"name": secret, "key": GIT_USERNAME_KEY}}
    decided = {"fieldPath": f"metadata.annotations['{PIPELINE_ANNOTATION}']"}
    # The image automation rewrites this tag with the app container's image (one setter each),
    # so that the init container knows which build the pod runs (nakama.build_record).
    image_tag = CommentedMap(name="NAKAMA_IMAGE_TAG", value=image[1])
    image_tag.yaml_add_eol_comment(marker[:-2] + ':tag"}', "value", column=0)
    sync_env = [
        {"name": "NAKAMA_REPO", "value": project.repo_url},
        {"name": "NAKAMA_COMMIT", "valueFrom": {"fieldRef": annotation}},
        {"name": "NAKAMA_PIPELINE", "valueFrom": {"fieldRef": decided}},
        image_tag,
        {"name": "NAKAMA_GIT_USERNAME", "valueFrom": username},
    ]
    if project.initial_commit:
        sync_env.append({"name": "NAKAMA_INITIAL_COMMIT", "value": project.initial_commit})
    sync = {
        "name": "sync-code",
        "image": settings.reloader_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", _SYNC_SCRIPT],
        "env": [*sync_env, home],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": locked_down,
        "volumeMounts": [*mounts, token_mount, builds_mount],
    }
    app = CommentedMap(name="app", image=f"{image[0]}:{image[1]}")
    app.yaml_add_eol_comment(marker, "image", column=0)
    check: dict[str, Any] = {"port": "http"}
    if project.health_path is None:
        probe: dict[str, Any] = {"tcpSocket": check, "timeoutSeconds": 3}
    else:
        probe = {"httpGet": {"path": project.health_path, **check}, "timeoutSeconds": 3}
    app["imagePullPolicy"] = "IfNotPresent"
    if project.command:
        app["command"] = list(project.command)
    app["workingDir"] = f"{CODE_ROOT}/current"
    # Kubernetes lets ``env`` win over ``envFrom``; nakama.variables refuses these names anyway.
    app["env"] = [
        {"name": "PORT", "value": str(project.port)},
        {"name": "HOME", "value": DATA_HOME},
        {"name": "DATA_DIR", "value": DATA_ROOT},
    ]
    variables = {"name": env_secret_name(project.name), "optional": True}
    app["envFrom"] = [{"secretRef": variables}]
    app["ports"] = [{"name": "http", "containerPort": project.port, "protocol": "TCP"}]
    # Up to 2 minutes to the first answer (a heavy app's imports), then the usual checks.
    app["startupProbe"] = {**probe, "periodSeconds": 2, "failureThreshold": 60}
    app["readinessProbe"] = {**probe, "periodSeconds": 5, "failureThreshold": 3}
    app["livenessProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 6}
    app["resources"] = project.resources.as_dict(project.limits)
    app["securityContext"] = locked_down
    app["volumeMounts"] = mounts
    token = {"secretName": secret, "defaultMode": 0o440}
    builds_record = builds_config_map(project.name)
    token["items"] = [{"key": GIT_TOKEN_KEY, "path": "git-token"}]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # apps have no business with the API server
        # Service links would put e.g. STREAMLIT_SERVER_PORT=tcp://... (from a Service named
        # streamlit-server) into the environment, where Streamlit reads its configuration.
        "enableServiceLinks": False,
        "imagePullSecrets": [{"name": lay.pull_secret}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": _UID,
            "runAsGroup": _UID,
            "fsGroup": _UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [sync],
        "containers": [app],
        "volumes": [
            {"name": "code", "persistentVolumeClaim": {"claimName": f"{project.name}-code"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": data_claim_name(project.name)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "git-token", "secret": token},
            # Written by Nakama before each build; absent until the first one.
            {"name": "builds", "configMap": {"name": builds_record, "optional": True}},
        ],
    }
    if lay.volume_access_mode == "ReadWriteOnce" and may_run_several(project.limits):
        pod["affinity"] = colocation(project.name)
    return pod


def _problem(p: AppProject, namespace: str) -> str | None:
    """What is wrong with the inputs, as "<what> <value>: <why>", or None."""
    validate_project_name(p.name)
    if p.name[0].isdigit():
        return f"name {p.name!r}: a Kubernetes Service name (DNS-1035) must start with a letter"
    if p.name == GATEWAY_SERVICE:
        return f"name {p.name!r}: the apps' namespace has a Service of that name (flux.gateway)"
    if not _DNS_LABEL.match(namespace):
        return f"namespace {namespace[:70]!r}: not a DNS-1123 label"
    if p.tag is not None and not _DOCKER_TAG.match(p.tag):
        return f"image tag {p.tag[:140]!r}: not a valid tag"
    if p.initial_commit is not None and not FULL_SHA.match(p.initial_commit):
        return f"commit {p.initial_commit[:80]!r}: expected a full lower-case hash"
    if not p.branch or p.branch[0] == "-" or any(c.isspace() or c in "~^:?*[\\" for c in p.branch):
        return f"branch {p.branch[:100]!r}: not a valid branch name"
    if not p.repo_url.startswith(("https://", "http://")):
        return "repository URL: must be an http(s) clone URL"
    if p.health_path is not None and (
        not p.health_path.startswith("/") or any(c.isspace() for c in p.health_path)
    ):
        return f"health path {p.health_path[:100]!r}: must start with '/' and have no spaces"
    if not 1 <= p.port <= 65535:
        return f"port {p.port}: out of range"
    if p.command is not None and not p.command:
        return "command (): give the arguments, or None for the image's CMD"
    return _limits_problem(p.limits)


def _limits_problem(limits: AppLimits) -> str | None:
    """What the API server would refuse in objects made from ``limits``, or None."""
    if limits.memory_mib < 1 or limits.disk_mib < 1 or limits.cpu <= 0:
        return f"limits {limits.as_dict()}: memory, disk and CPU must be positive"
    if limits.replicas < 1:
        return f"replicas {limits.replicas}: at least one"
    if limits.autoscale_max is not None and limits.autoscale_max < limits.replicas:
        return f"autoscale_max {limits.autoscale_max}: below replicas {limits.replicas}"
    if not 1 <= limits.autoscale_cpu_percent <= 1000:
        return f"autoscale_cpu_percent {limits.autoscale_cpu_percent}: out of range"
    return None


def _duration(seconds: int) -> str:
    """A Flux duration: whole minutes as ``<n>m`` (as flux create writes them), else seconds."""
    if seconds <= 0:
        raise InvalidInput(f"invalid interval {seconds}: must be positive")
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _commit_message(name: str) -> str:
    # Only fields image-automation v1 still has: a template using .Updated stalls the automation.
    text: str = LiteralScalarString(  # written as a |- block, readable in the GitOps repository
        f"{name}: deploy the newest image\n\n"
        "Automation: {{ .AutomationObject }}\n"
        "{{ range $file, $_ := .Changed.FileChanges }}- {{ $file }}\n{{ end }}"
    )
    return text
