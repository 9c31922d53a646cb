"""Restart an app's Deployment on a new commit, the way ``kubectl rollout restart`` does.

A code-only push changes no image, so nothing in the cluster would restart the app by itself. The
restart patches the Deployment's pod template with a new ``kubectl.kubernetes.io/restartedAt`` and
the pushed commit in ``nakama.dev/commit``. That one patch both rolls the pods (a template change
is an ordinary rolling update, respecting the Deployment's strategy) and tells each new pod which
commit to sync: its init container reads the annotation through the downward API.

The ``delete-pods`` method is the original design's pod delete. Deleting pods cannot change what
they sync, so when the commit differs from the template's, the commit annotation is patched
instead (without ``restartedAt``): that patch already rolls the pods, and deleting them as well
would restart them twice and bypass ``maxUnavailable``. Only when the template already names the
commit (or no commit is given) are the pods deleted, for their ReplicaSet to recreate.

Both annotations are owned by field manager ``nakama-reloader``, so a server-side-apply GitOps
applier (Flux) keeps them as long as the manifests themselves never set them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

from nakama.build_record import PIPELINE_ANNOTATION
from nakama.clients.git import FULL_SHA
from nakama.clients.kubernetes import DEFAULT_RETRY, RetryPolicy, kube_call, to_json
from nakama.errors import InvalidInput, NotFound, PermanentError, TemporaryError

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
COMMIT_ANNOTATION = "nakama.dev/commit"
FIELD_MANAGER = "nakama-reloader"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
NAME_LABEL = "app.kubernetes.io/name"

Method = Literal["patch", "delete-pods"]
# What was done: the restart patch; the commit-only patch (delete-pods, new commit); a pod delete.
Action = Literal["patched", "patched-commit", "deleted-pods"]


@dataclass(frozen=True)
class RestartResult:
    """What a restart did; ``generation`` is what a rollout wait must see observed."""

    namespace: str
    name: str
    method: Method
    action: Action
    commit: str | None
    restarted_at: str | None  # the restartedAt written; None when it was not patched
    generation: int
    deleted_pods: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutStatus:
    done: bool
    failed: bool
    message: str


def rfc3339(now: datetime) -> str:
    """Go's ``time.RFC3339``: second precision, ``Z`` for UTC, else the offset."""
    if now.utcoffset() is None:
        raise InvalidInput("the restart time must be timezone-aware")
    text = now.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def restart_patch(
    commit: str | None, now: datetime, *, pipeline: int | None = None
) -> dict[str, Any]:
    """The strategic-merge patch body: restartedAt = ``now``, and the commit unless None, with
    the pipeline id that decided it (:mod:`nakama.build_record`) when given."""
    annotations: dict[str, str | None] = {RESTARTED_AT: rfc3339(now)}
    if commit is not None:
        annotations.update(commit_annotations(commit, pipeline))
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def commit_patch(commit: str, *, pipeline: int | None = None) -> dict[str, Any]:
    """The patch that names a new commit without a restartedAt (the delete-pods method)."""
    annotations = commit_annotations(commit, pipeline)
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def commit_annotations(commit: str, pipeline: int | None) -> dict[str, str | None]:
    """The commit, and the pipeline id that named it. Without an id, an id left by an earlier
    restart is removed (null deletes a key in a merge patch): paired with this newer commit it
    would let an older build's image take the pod back to the build's commit."""
    return {
        COMMIT_ANNOTATION: check_commit(commit),
        PIPELINE_ANNOTATION: None if pipeline is None else str(int(pipeline)),
    }


def check_commit(commit: str) -> str:
    """A full lower-case hash: the init container fetches by hash, never by a short prefix."""
    if not FULL_SHA.match(commit):
        raise InvalidInput(f"commit must be a full lower-case hash, got {commit[:80]!r}")
    return commit


def rollout_status(deployment: Mapping[str, Any]) -> RolloutStatus:
    """kubectl's rollout-status rule for one Deployment, as the API's JSON."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    if generation > (status.get("observedGeneration") or 0):
        return RolloutStatus(False, False, "waiting for the deployment spec update to be observed")
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutStatus(False, True, "the deployment exceeded its progress deadline")
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    replicas = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return RolloutStatus(False, False, f"{updated} of {wanted} new replicas updated")
    if replicas > updated:
        return RolloutStatus(False, False, f"{replicas - updated} old replicas pending termination")
    if available < updated:
        return RolloutStatus(False, False, f"{available} of {updated} updated replicas available")
    return RolloutStatus(True, False, "successfully rolled out")


def restart_app(
    api: ApiClient,
    *,
    namespace: str,
    name: str,
    commit: str | None,
    method: Method,
    now: datetime,
    retry: RetryPolicy = DEFAULT_RETRY,
    pipeline: int | None = None,
) -> RestartResult:
    """Restart Deployment ``namespace/name`` on ``commit`` (None: the commit it already names);
    ``pipeline``: the id of the Nakama pipeline that decided it, for the pods to weigh against
    a newer build's image (:func:`nakama.build_record.choose_commit`)."""
    if method not in ("patch", "delete-pods"):
        raise InvalidInput(f"unknown restart method {method!r}")
    if commit is not None:
        check_commit(commit)
    apps = AppsV1Api(api)
    where = f"deployment {namespace}/{name}"
    deployment = to_json(
        api,
        kube_call(
            apps.read_namespaced_deployment, name, namespace, what=f"reading {where}", retry=retry
        ),
    )
    if deployment["spec"].get("paused"):
        raise PermanentError(f"can't restart paused {where} (run rollout resume first)")
    template_annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations")
    current = template_annotations or {}
    if method == "patch":
        if current.get(RESTARTED_AT) == rfc3339(now):  # the same second: the patch would be a no-op
            now += timedelta(seconds=1)
        body = restart_patch(commit, now, pipeline=pipeline)
    elif commit is not None and current.get(COMMIT_ANNOTATION) != commit:
        body = commit_patch(commit, pipeline=pipeline)
    else:
        pods = _delete_pods(api, deployment, retry=retry)
        generation = deployment["metadata"].get("generation") or 0
        return RestartResult(
            namespace, name, method, "deleted-pods", commit, None, generation, pods
        )
    patched = kube_call(
        apps.patch_namespaced_deployment,
        name,
        namespace,
        body,
        what=f"patching {where}",
        retry=retry,
        field_manager=FIELD_MANAGER,
        _content_type=STRATEGIC_MERGE,
    )
    restarted_at = body["spec"]["template"]["metadata"]["annotations"].get(RESTARTED_AT)
    generation = patched.metadata.generation if patched.metadata else None
    action: Action = "patched" if method == "patch" else "patched-commit"
    return RestartResult(namespace, name, method, action, commit, restarted_at, generation or 0)


def _delete_pods(
    api: ApiClient, deployment: Mapping[str, Any], *, retry: RetryPolicy
) -> tuple[str, ...]:
    """Delete every pod the Deployment selects; each ReplicaSet recreates its own."""
    meta = deployment["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    labels = (deployment["spec"].get("selector") or {}).get("matchLabels") or {NAME_LABEL: name}
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    core = CoreV1Api(api)
    pods = kube_call(
        core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        what=f"listing pods of deployment {namespace}/{name}",
        retry=retry,
    )
    deleted = []
    for pod in pods.items:
        if pod.metadata is None or pod.metadata.name is None or pod.metadata.deletion_timestamp:
            continue  # already terminating
        try:
            kube_call(
                core.delete_namespaced_pod,
                pod.metadata.name,
                namespace,
                what=f"deleting pod {namespace}/{pod.metadata.name}",
                retry=retry,
            )
        except NotFound:
            continue  # gone meanwhile, or deleted by an attempt whose answer was lost
        deleted.append(pod.metadata.name)
    return tuple(deleted)


def wait_for_rollout(
    api: ApiClient,
    *,
    namespace: str,
    name: str,
    timeout_s: float,
    interval_s: float = 1.0,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> RolloutStatus:
    """Poll until the rollout is done (returned), failed (:class:`PermanentError`) or
    ``timeout_s`` passed (:class:`TemporaryError`: the rollout may still finish)."""
    apps = AppsV1Api(api)
    where = f"deployment {namespace}/{name}"
    deadline = time.monotonic() + timeout_s
    while True:
        deployment = kube_call(
            apps.read_namespaced_deployment, name, namespace, what=f"reading {where}", retry=retry
        )
        status = rollout_status(to_json(api, deployment))
        if status.done:
            return status
        if status.failed:
            raise PermanentError(f"rollout of {where} failed: {status.message}")
        if time.monotonic() + interval_s > deadline:
            raise TemporaryError(
                f"rollout of {where} not done after {timeout_s:g} s: {status.message}"
            )
        time.sleep(interval_s)
