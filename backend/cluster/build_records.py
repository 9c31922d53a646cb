"""The ConfigMap ``<app>-builds`` through the Kubernetes API (:mod:`nakama.build_record` says
what it is for): a build is recorded before it is triggered, and the record goes with the app."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from kubernetes.client import ApiClient, CoreV1Api, V1ConfigMap, V1ObjectMeta
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from nakama.build_record import builds_config_map, entry, recorded
from nakama.clients.kubernetes import kube_call, to_json
from nakama.errors import Conflict, NotFound, TemporaryError

_TRIES = 10  # read-modify-replace rounds lost to concurrent writers before giving up


def record_build(
    kube: ApiClient, *, namespace: str, project: str, commit: str, pipeline_id: int
) -> None:
    """Add ``commit`` built by ``pipeline_id`` to the app's record (made when absent). The
    replace carries the read's resourceVersion, so two builds recorded at once both stay: the
    loser's 409 makes it read again and merge, after a short random wait."""
    core = CoreV1Api(kube)
    name = builds_config_map(project)
    where = f"config map {namespace}/{name}"
    add = entry(commit, pipeline_id)

    def once() -> None:
        try:
            read = kube_call(
                core.read_namespaced_config_map, name, namespace, what=f"reading {where}"
            )
        except NotFound:
            body = _config_map(project, namespace, recorded({}, add=add))
            create = functools.partial(core.create_namespaced_config_map, namespace, body)
            kube_call(create, what=f"creating {where}")  # 409 if made meanwhile: again
            return
        live = to_json(kube, read)
        version = live["metadata"].get("resourceVersion")
        body = _config_map(project, namespace, recorded(live.get("data") or {}, add=add), version)
        replace = functools.partial(core.replace_namespaced_config_map, name, namespace, body)
        kube_call(replace, what=f"replacing {where}")  # 409 if changed since the read: again

    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(Conflict),
            stop=stop_after_attempt(_TRIES),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        ):
            with attempt:
                once()
    except Conflict:
        raise TemporaryError(f"{where} kept changing; the build was not recorded") from None


def _config_map(
    project: str, namespace: str, data: Mapping[str, str], version: str | None = None
) -> V1ConfigMap:
    labels = {"app.kubernetes.io/name": project, "app.kubernetes.io/managed-by": "nakama"}
    meta = V1ObjectMeta(
        name=builds_config_map(project),
        namespace=namespace,
        labels=labels,
        resource_version=version,
    )
    return V1ConfigMap(metadata=meta, data=dict(data))


def delete_build_records(kube: ApiClient, *, namespace: str, project: str) -> bool:
    """Delete the app's record; False if there was none."""
    core = CoreV1Api(kube)
    name = builds_config_map(project)
    try:
        kube_call(
            core.delete_namespaced_config_map,
            name,
            namespace,
            what=f"deleting config map {namespace}/{name}",
        )
    except NotFound:
        return False
    return True
