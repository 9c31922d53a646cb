"""What an app may use in cluster mode (flux.resources) and who may connect to it (flux.network),
as rendered by flux.manifests: resources, replicas or an autoscaler, the data volume, the
NetworkPolicy, and the helpers backend.cluster.runtime uses to re-render an app's limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from ruamel.yaml import YAML

from flux.manifests import (
    AppProject,
    GitOpsLayout,
    config_resources,
    deployment_pins,
    grown_claim,
    limits_paths,
    render_files,
    render_manifests,
)
from flux.resources import PRUNE_ANNOTATION, Resources, cpu_quantity, quantity_mib
from flux.validate import validate_documents
from nakama.errors import InvalidInput
from nakama.limits import AppLimits, effective_limits
from nakama.settings import FluxSettings, HarborSettings, LimitsSettings

NAMESPACE = "nakama-apps"
SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
DEFAULTS = effective_limits(LimitsSettings())


def limits(**changes: Any) -> AppLimits:
    return replace(DEFAULTS, **changes)


def render(
    app_limits: AppLimits = DEFAULTS,
    *,
    layout: GitOpsLayout | None = None,
    settings: FluxSettings | None = None,
    **project: Any,
) -> list[dict[str, Any]]:
    app = AppProject(
        name="demo", repo_url="https://g.example/demo.git", limits=app_limits, **project
    )
    return render_manifests(
        app, settings or FluxSettings(), harbor=HarborSettings(), namespace=NAMESPACE, layout=layout
    )


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str = "demo") -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def app_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    return app  # type: ignore[no-any-return]


# --- resources --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("memory_mib", "cpu", "requests", "limits_"),
    [
        (1024, 1.0, {"cpu": "100m", "memory": "256Mi"}, {"cpu": "1", "memory": "1Gi"}),
        (3072, 2.0, {"cpu": "100m", "memory": "256Mi"}, {"cpu": "2", "memory": "3Gi"}),
        (1536, 1.5, {"cpu": "100m", "memory": "256Mi"}, {"cpu": "1500m", "memory": "1536Mi"}),
        # Limits below the usual requests: the requests come down to them, never above.
        (128, 0.05, {"cpu": "50m", "memory": "128Mi"}, {"cpu": "50m", "memory": "128Mi"}),
        (32, 0.0001, {"cpu": "1m", "memory": "32Mi"}, {"cpu": "1m", "memory": "32Mi"}),
    ],
)
def test_the_app_container_gets_its_limits_and_small_requests(
    memory_mib: int, cpu: float, requests: dict[str, str], limits_: dict[str, str]
) -> None:
    docs = render(limits(memory_mib=memory_mib, cpu=cpu))
    assert app_container(docs)["resources"] == {"requests": requests, "limits": limits_}
    assert validate_documents(docs) == []


def test_requests_are_configurable_and_still_capped() -> None:
    resources = Resources(cpu_request_m=2000, memory_request_mib=4096)
    assert resources.as_dict(limits(memory_mib=512, cpu=0.5))["requests"] == {
        "cpu": "500m",
        "memory": "512Mi",
    }
    assert cpu_quantity(2500) == "2500m" and cpu_quantity(3000) == "3"


# --- replicas and the autoscaler --------------------------------------------------------------
@pytest.mark.parametrize("replicas", [1, 3])
def test_fixed_replicas_are_the_deployments_and_there_is_no_autoscaler(replicas: int) -> None:
    docs = render(limits(replicas=replicas))
    assert one(docs, "Deployment")["spec"]["replicas"] == replicas
    assert of_kind(docs, "HorizontalPodAutoscaler") == []


def test_an_autoscaler_owns_the_number_of_pods() -> None:
    docs = render(limits(replicas=2, autoscale_max=5, autoscale_cpu_percent=65))
    assert "replicas" not in one(docs, "Deployment")["spec"]  # no fight with Flux's reapply
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 65},
                },
            }
        ],
    }
    # Utilization is a share of the request: the app container must have one.
    assert app_container(docs)["resources"]["requests"]["cpu"]
    assert validate_documents(docs) == []


@pytest.mark.parametrize(
    ("app_limits", "mode", "colocated"),
    [
        (limits(), "ReadWriteOnce", False),
        (limits(replicas=2), "ReadWriteOnce", True),
        (limits(autoscale_max=4), "ReadWriteOnce", True),
        (limits(autoscale_max=1), "ReadWriteOnce", False),  # never more than one pod
        (limits(replicas=2), "ReadWriteMany", False),
        (limits(autoscale_max=4), "ReadWriteMany", False),
    ],
)
def test_pods_sharing_readwriteonce_volumes_are_kept_on_one_node(
    app_limits: AppLimits, mode: str, colocated: bool
) -> None:
    docs = render(app_limits, layout=GitOpsLayout(volume_access_mode=mode))  # type: ignore[arg-type]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {tuple(c["spec"]["accessModes"]) for c in of_kind(docs, "PersistentVolumeClaim")} == {
        (mode,)
    }
    if colocated:
        (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "demo"}},
            "topologyKey": "kubernetes.io/hostname",
        }
    else:
        assert "affinity" not in pod
    assert validate_documents(docs) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"replicas": 3, "autoscale_max": 2}, "autoscale_max 2: below replicas 3"),
        ({"replicas": 0}, "replicas 0"),
        ({"memory_mib": 0}, "must be positive"),
        ({"cpu": 0.0}, "must be positive"),
        ({"disk_mib": 0}, "must be positive"),
        ({"autoscale_cpu_percent": 0}, "autoscale_cpu_percent 0"),
    ],
)
def test_limits_the_api_server_would_refuse_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        render(limits(**changes))


# --- the data volume --------------------------------------------------------------------------
def test_the_data_volume_has_the_disk_limit_survives_pruning_and_is_mounted() -> None:
    docs = render(limits(disk_mib=5120), layout=GitOpsLayout(storage_class="fast"))
    data = one(docs, "PersistentVolumeClaim", "demo-data")
    assert data["metadata"]["annotations"] == {PRUNE_ANNOTATION: "disabled"}
    assert data["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast",
    }
    code = one(docs, "PersistentVolumeClaim", "demo-code")
    assert "annotations" not in code["metadata"]  # worktrees only: pruned with the app
    assert code["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "demo-data"}} in pod["volumes"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]  # /tmp stays
    for container in (*pod["initContainers"], *pod["containers"]):
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in app_container(docs)["env"]}
    assert env["DATA_DIR"] == "/data" and env["HOME"] == "/data/home"
    assert pod["initContainers"][0]["command"][-1].startswith("mkdir -p /data/home && exec ")
    # The volume's root is the pod's group (fsGroup), so the init container may make $HOME.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


@pytest.mark.parametrize(
    ("text", "mib"),
    [("2Gi", 2048), ("512Mi", 512), ("1Ti", 1024**2), ("1048576", 1), ("2G", None), ("x", None)],
)
def test_quantities_in_binary_units_are_read(text: str, mib: float | None) -> None:
    assert quantity_mib(text) == mib


def test_a_claim_grows_but_never_shrinks_and_keeps_what_cannot_change() -> None:
    files = render_files(
        AppProject(name="demo", repo_url="https://g.example/d.git", limits=limits(disk_mib=2048)),
        FluxSettings(),
        harbor=HarborSettings(),
        namespace=NAMESPACE,
        layout=GitOpsLayout(volume_access_mode="ReadWriteMany", storage_class="nfs"),
    )
    text = files["apps/demo/persistentvolumeclaim-data.yaml"]
    assert grown_claim(text, "2Gi") is None
    assert grown_claim(text, "1Gi") is None  # the API server refuses a smaller claim
    assert grown_claim(text, "2G") is None  # not comparable: left alone
    grown = grown_claim(text, "3Gi")
    assert grown is not None
    before, after = (YAML(typ="safe").load(t) for t in (text, grown))
    assert after["spec"]["resources"]["requests"]["storage"] == "3Gi"
    after["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert after == before


# --- the NetworkPolicy ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("controller", "namespace", "pods"),
    [
        ("nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        ("traefik", "traefik", {"app.kubernetes.io/name": "traefik"}),
        ("none", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    ],
)
def test_only_the_ingress_controller_reaches_the_app_port(
    controller: str, namespace: str, pods: dict[str, str]
) -> None:
    settings = FluxSettings(ingress_controller=controller)  # type: ignore[arg-type]
    docs = render(settings=settings, port=8080)
    policy = one(docs, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    spec = policy["spec"]
    assert spec["podSelector"] == one(docs, "Deployment")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]  # egress is not isolated: apps may call out
    (rule,) = spec["ingress"]
    # One peer with both selectors: the controller's pods in its namespace, nothing else.
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": pods},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert app_container(docs)["ports"][0]["containerPort"] == 8080
    assert validate_documents(docs) == []


def test_the_ingress_controller_selectors_are_configurable() -> None:
    layout = GitOpsLayout(
        ingress_namespace_labels={"kubernetes.io/metadata.name": "kube-system"},
        ingress_pod_labels={"app.kubernetes.io/name": "traefik", "role": "edge"},
    )
    (rule,) = one(render(layout=layout), "NetworkPolicy")["spec"]["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik", "role": "edge"}},
        }
    ]


def test_no_other_app_matches_the_policy_or_its_peer() -> None:
    (rule,) = one(render(), "NetworkPolicy")["spec"]["ingress"]
    (peer,) = rule["from"]
    # An app pod's labels are Nakama's two; the peer needs a label no app pod has.
    app_labels = {"app.kubernetes.io/name": "other", "app.kubernetes.io/managed-by": "nakama"}
    selector = peer["podSelector"]["matchLabels"]
    assert any(app_labels.get(k) != v for k, v in selector.items())
    assert "ipBlock" not in peer and set(peer) == {"namespaceSelector", "podSelector"}


# --- re-rendering an app's limits (backend.cluster.runtime.set_limits) ----------------------
def files_for(app_limits: AppLimits, **project: Any) -> dict[str, str]:
    app = AppProject(name="demo", repo_url="https://g.example/d.git", limits=app_limits, **project)
    return render_files(app, FluxSettings(), harbor=HarborSettings(), namespace=NAMESPACE)


def test_a_limits_change_touches_only_the_limits_paths_and_the_list() -> None:
    variants = [
        limits(),
        limits(memory_mib=2048, cpu=2.0),
        limits(replicas=3),
        limits(replicas=2, autoscale_max=8),
        limits(disk_mib=4096),
    ]
    rendered = [files_for(v) for v in variants]
    every = set().union(*rendered)
    changed = {p for p in every if len({r.get(p) for r in rendered}) > 1}
    owned = set(limits_paths("demo", FluxSettings()))
    assert changed == owned | {"apps/demo/kustomization.yaml"}
    listed = {frozenset(config_resources(r["apps/demo/kustomization.yaml"])) for r in rendered}
    assert len(listed) == 2  # with and without horizontalpodautoscaler.yaml
    assert "apps/demo/horizontalpodautoscaler.yaml" in rendered[3]


@pytest.mark.parametrize(
    ("tag", "commit", "repository"),
    [
        (None, SHA, None),
        ("main-da156088-20261122040506", None, None),
        ("main-da156088-20261122040506", SHA, "registry.internal:5000/team/demo"),
    ],
)
def test_deployment_pins_read_back_what_was_rendered(
    tag: str | None, commit: str | None, repository: str | None
) -> None:
    files = files_for(DEFAULTS, tag=tag, initial_commit=commit, image_repository=repository)
    pins = deployment_pins(files["apps/demo/deployment.yaml"])
    assert pins.initial_commit == commit
    assert pins.tag == (tag or "main-00000000-19700101000000")
    assert pins.image_repository == (repository or "harbor.example.com/nakama-apps/demo")
    again = files_for(
        DEFAULTS, tag=pins.tag, initial_commit=commit, image_repository=pins.image_repository
    )
    assert again["apps/demo/deployment.yaml"] == files["apps/demo/deployment.yaml"]


def test_a_deployment_without_an_app_image_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no app container"):
        deployment_pins("apiVersion: apps/v1\nkind: Deployment\nspec: {}\n")


def test_the_schema_check_does_catch_mistakes_in_the_new_kinds() -> None:
    docs = render(limits(autoscale_max=3))
    policy, hpa = one(docs, "NetworkPolicy"), one(docs, "HorizontalPodAutoscaler")
    policy["spec"]["ingress"][0]["from"][0]["podSelectr"] = {}
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilisation"] = 50
    problems = validate_documents([policy, hpa])
    assert [p.split(":")[0] for p in problems] == [
        "NetworkPolicy/demo",
        "HorizontalPodAutoscaler/demo",
    ]
