"""What one app may use in cluster mode, as Kubernetes spells it: the app container's requests and
limits, its replicas or HorizontalPodAutoscaler, and its data volume, all from the app's
:class:`nakama.limits.AppLimits`. Pure, like :mod:`flux.manifests`, which puts these pieces into
the app's objects.

Nakama's ``processes`` limit has no Kubernetes field (a container has no pids limit of its own):
in cluster mode the node's pod pids limit (the kubelet's ``podPidsLimit``) applies instead, and
the processes limit is enforced in local mode only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from nakama.limits import AppLimits

AUTOSCALING_API = "autoscaling/v2"
# Flux leaves an object with this annotation in place when it leaves the source, and when the
# Kustomization that applied it is deleted (kustomize-controller's docs, "Prune").
PRUNE_ANNOTATION = "kustomize.toolkit.fluxcd.io/prune"
DATA_ROOT = "/data"  # the data volume in the app container; $DATA_DIR
DATA_HOME = f"{DATA_ROOT}/home"  # $HOME: dotfiles and caches persist with the data
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany"]
_QUANTITY = re.compile(r"^(?P<number>[0-9]+)(?P<unit>Ki|Mi|Gi|Ti|Pi)?$")
_UNIT_MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "Pi": 1024**3}


@dataclass(frozen=True)
class Resources:
    """The app container's requests: small, so that many idle apps fit a node (the scheduler
    counts requests). Its limits are the app's :class:`AppLimits`, so that one runaway app
    cannot starve its neighbours; a request above its limit is lowered to it, as the API server
    refuses a request above the limit."""

    cpu_request_m: int = 100  # millicores
    memory_request_mib: int = 256

    def as_dict(self, limits: AppLimits) -> dict[str, dict[str, str]]:
        cpu_m = millicores(limits.cpu)
        return {
            "requests": {
                "cpu": cpu_quantity(min(self.cpu_request_m, cpu_m)),
                "memory": mib_quantity(min(self.memory_request_mib, limits.memory_mib)),
            },
            "limits": {"cpu": cpu_quantity(cpu_m), "memory": mib_quantity(limits.memory_mib)},
        }


def millicores(cpu: float) -> int:
    """Cores as whole millicores, at least 1 (Kubernetes' finest CPU unit)."""
    return max(1, round(cpu * 1000))


def cpu_quantity(milli: int) -> str:
    """``1``, ``2``, ``500m``, ``1500m``: whole cores plainly, else millicores."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def mib_quantity(mib: int) -> str:
    """``1Gi`` when a whole number of GiB, else ``<n>Mi``."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def quantity_mib(text: str) -> float | None:
    """A binary-suffixed quantity (``2Gi``, ``512Mi``, bytes) in MiB; None for other spellings."""
    match = _QUANTITY.match(text.strip())
    if not match:
        return None
    number = int(match["number"])
    unit = match["unit"]
    return number * _UNIT_MIB[unit] if unit else number / (1024 * 1024)


def may_run_several(limits: AppLimits) -> bool:
    """Whether the app can have more than one pod at a time."""
    return limits.replicas > 1 or (limits.autoscale_max or 0) > 1


def replicas_spec(limits: AppLimits) -> dict[str, int]:
    """The Deployment's ``replicas``, or nothing when an autoscaler owns the number.

    The Kubernetes docs on horizontal autoscaling ("Migrating Deployments and StatefulSets to
    horizontal autoscaling") advise removing ``spec.replicas`` from the manifest of a workload an
    HPA scales: each apply of a manifest that has it resets the pod count to that value. Flux
    applies the app's manifests at every reconcile (drift correction, kustomize-controller's
    ``.spec.interval``), so with the field the two would fight every few minutes. Without it
    the HPA alone sets the count, between ``minReplicas`` and ``maxReplicas``. (Dropping the
    field from a Deployment that had it lets the API server default it to 1 once, until the HPA
    scales up again to ``minReplicas``.)
    """
    return {} if limits.autoscale_max is not None else {"replicas": limits.replicas}


def autoscaler_spec(name: str, limits: AppLimits) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler's spec (autoscaling/v2, on CPU utilization: a share of the
    app container's CPU request), or None when the app has a fixed number of replicas."""
    if limits.autoscale_max is None:
        return None
    target = {"type": "Utilization", "averageUtilization": limits.autoscale_cpu_percent}
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": limits.replicas,
        "maxReplicas": limits.autoscale_max,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
    }


def claim_spec(size: str, *, access_mode: AccessMode, storage_class: str | None) -> dict[str, Any]:
    """A PersistentVolumeClaim's spec. Its access modes and class cannot change once the claim
    exists (the API server refuses it, and Flux's apply would fail), only its size may grow."""
    spec: dict[str, Any] = {"accessModes": [access_mode]}
    spec["resources"] = {"requests": {"storage": size}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return spec


def colocation(name: str) -> dict[str, Any]:
    """Keep every pod of the app on one node: a ReadWriteOnce volume attaches to one node only,
    while any number of pods on that node may mount it. The first pod goes anywhere (the
    scheduler lets a pod that matches its own affinity term start where none runs yet)."""
    term = {
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "topologyKey": "kubernetes.io/hostname",
    }
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
