"""Who may open a connection to an app's pods: the NetworkPolicy of each app.

An app's pods accept connections only from the Ingress controller's pods, and only on the app's
port; never from other apps, nor from anything else in the cluster. The controller is found by a
namespace selector and a pod selector, both together (one peer: pods with these labels in
namespaces with those labels). The defaults follow the usual installs of the controller
``FluxSettings.ingress_controller`` names; :class:`flux.manifests.GitOpsLayout` can say
otherwise. Egress is not restricted: apps may call out (databases, APIs, package indexes).

Kubelet probes come from the node and are not subject to the policy. An Ingress controller on
the host network (``hostNetwork: true``) has the node's address, which no pod selector matches:
such a controller needs a policy of the operator's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NETWORKING_API = "networking.k8s.io/v1"
_NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the API server sets it on every namespace
# controller -> (namespace labels, pod labels) of its usual install (Helm chart or manifests).
CONTROLLER_PEERS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "nginx": ({_NAMESPACE_NAME: "ingress-nginx"}, {"app.kubernetes.io/name": "ingress-nginx"}),
    "traefik": ({_NAMESPACE_NAME: "traefik"}, {"app.kubernetes.io/name": "traefik"}),
    # Nakama does not know the controller; ingress-nginx's labels are the likeliest guess.
    "none": ({_NAMESPACE_NAME: "ingress-nginx"}, {"app.kubernetes.io/name": "ingress-nginx"}),
}


def ingress_peer(
    controller: str,
    *,
    namespace_labels: Mapping[str, str] | None = None,
    pod_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one peer allowed in: the controller's pods, by the given labels or its defaults."""
    default_namespace, default_pods = CONTROLLER_PEERS.get(controller, CONTROLLER_PEERS["none"])
    return {
        "namespaceSelector": {"matchLabels": dict(namespace_labels or default_namespace)},
        "podSelector": {"matchLabels": dict(pod_labels or default_pods)},
    }


def policy_spec(name: str, *, port: int, peer: dict[str, Any]) -> dict[str, Any]:
    """Ingress to the app's pods from ``peer`` on TCP ``port`` only; egress left open (only
    ``Ingress`` is among the policy types, so egress is not isolated)."""
    return {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": port}]}],
    }
