"""deploy/ (the platform's own manifests and image) and docs/cluster-install.md against the real
schemas and against the code they must agree with.

* Every YAML document under deploy/ validates with :func:`flux.validate.validate_documents`
  (core kinds through kubernetes-validate, Flux kinds through the reference CRDs). The Flux
  Receiver has no CRD in the reference data, so :func:`receiver_problems` checks it by hand
  against the notification.toolkit.fluxcd.io/v1 Receiver spec (type, secretRef, resources).
* Every kustomization's ``resources`` and patch files exist; with kubectl on the PATH, each
  kustomization is also built and its output validated.
* RBAC is least privilege (no cluster-wide objects, no wildcards, exactly the verbs listed in
  :data:`NEEDED`), and covers every Kubernetes API call the code makes: the calls are found by
  reading the source (:func:`kube_calls`), each maps to a (group, resource, verb) through
  :data:`KINDS` and :data:`VERBS`, and every one must be in :data:`NEEDED` and granted.
* The Dockerfile is checked as text: base image, non-root USER, ENTRYPOINT, no secrets.
* The install guide names only settings, commands and options that exist, and lists every
  cluster setting with its default.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML

from code_reloader.cli import sync_main
from code_reloader.restart_cli import restart_main
from flux.cli import render_main, validate_main
from flux.manifests import AppProject, GitOpsLayout, app_dir, render_manifests
from flux.validate import REFERENCE_ENV, default_reference_dir, load_crd_schemas, validate_documents
from image_builder.build import build_main
from nakama.settings import (
    FluxSettings,
    GitLabSettings,
    HarborSettings,
    KubernetesSettings,
    Settings,
)
from nakama_cli.main import app as cli_app
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
BASE = DEPLOY / "kustomize" / "base"
OVERLAY = DEPLOY / "kustomize" / "overlays" / "example"
FLUX = DEPLOY / "flux"
RELOADER_PIPELINE = DEPLOY / "reloader-pipeline"
DOCKERFILE = DEPLOY / "Dockerfile"
GUIDE = REPO_ROOT / "docs" / "cluster-install.md"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
KUSTOMIZATIONS = sorted(DEPLOY.rglob("kustomization.yaml"))
KUSTOMIZE_CONFIG_API = "kustomize.config.k8s.io/v1beta1"
RECEIVER_KEY = ("notification.toolkit.fluxcd.io/v1", "Receiver")
APPS_NAMESPACE = KubernetesSettings().namespace
PLATFORM_UID = 10001


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe", pure=True).load_all(path.read_text()) if d]


def objects(paths: list[Path]) -> list[dict[str, Any]]:
    """The API objects in ``paths`` (kustomize configs are not objects)."""
    found = [d for p in paths for d in load_all(p)]
    return [d for d in found if d.get("apiVersion") != KUSTOMIZE_CONFIG_API]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


# --- the Receiver, by hand -----------------------------------------------------------------

# notification-controller's docs/spec/v1/receivers.md (Flux 2.x): the types, the kinds a Receiver
# may annotate, and which types filter by ``events``.
RECEIVER_TYPES = {
    "generic",
    "generic-hmac",
    "github",
    "gitlab",
    "bitbucket",
    "harbor",
    "dockerhub",
    "quay",
    "nexus",
    "acr",
    "gcr",
    "cdevents",
}
RECEIVER_EVENT_TYPES = {"github", "gitlab", "bitbucket", "cdevents"}
RECEIVER_RESOURCE_KINDS = {
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
}
_RECEIVER_SPEC = {
    "type",
    "interval",
    "events",
    "resources",
    "secretRef",
    "suspend",
    "resourceFilter",
}
_TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec"}
_RECEIVER_RESOURCE = {"apiVersion", "kind", "name", "namespace", "matchLabels"}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")


def receiver_problems(doc: dict[str, Any]) -> list[str]:
    """What the API server would refuse in a notification.toolkit.fluxcd.io/v1 Receiver, or
    what the controller would fail on (a wildcard name without matchLabels)."""
    problems = [f"unknown top-level field {k}" for k in doc if k not in _TOP_LEVEL]
    meta = doc.get("metadata") or {}
    if not _DNS_SUBDOMAIN.match(str(meta.get("name", ""))):
        problems.append("metadata.name is not a DNS subdomain")
    if "namespace" in meta and not _DNS_LABEL.match(str(meta["namespace"])):
        problems.append("metadata.namespace is not a DNS label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec missing"]
    problems += [f"unknown field spec.{k}" for k in spec if k not in _RECEIVER_SPEC]
    if spec.get("type") not in RECEIVER_TYPES:
        problems.append(f"spec.type {spec.get('type')!r} is not a Receiver type")
    if spec.get("events") and spec.get("type") not in RECEIVER_EVENT_TYPES:
        problems.append(f"spec.events is ignored by type {spec.get('type')!r}")
    if "interval" in spec and not _DURATION.match(str(spec["interval"])):
        problems.append("spec.interval is not a duration")
    secret_ref = spec.get("secretRef")
    if not isinstance(secret_ref, dict) or set(secret_ref) != {"name"}:
        problems.append("spec.secretRef must be {name: ...}")
    resources = spec.get("resources")
    if not isinstance(resources, list) or not resources:
        return [*problems, "spec.resources must be a non-empty list"]
    for i, ref in enumerate(resources):
        where = f"spec.resources[{i}]"
        problems += [f"unknown field {where}.{k}" for k in ref if k not in _RECEIVER_RESOURCE]
        if ref.get("kind") not in RECEIVER_RESOURCE_KINDS:
            problems.append(f"{where}.kind {ref.get('kind')!r} cannot be notified")
        if not ref.get("name"):
            problems.append(f"{where}.name is required")
        if (ref.get("name") == "*") != bool(ref.get("matchLabels")):
            problems.append(f"{where}: name '*' goes with matchLabels, and only with it")
    return problems


def deploy_problems(docs: list[dict[str, Any]]) -> list[str]:
    """validate_documents for every document, the Receiver by hand."""
    problems: list[str] = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) == RECEIVER_KEY:
            name = doc.get("metadata", {}).get("name", "?")
            problems += [f"Receiver/{name}: {p}" for p in receiver_problems(doc)]
        else:
            problems += validate_documents([doc])
    return problems


def test_deploy_has_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}
    for expected in (
        "kustomize/base/kustomization.yaml",
        "kustomize/overlays/example/kustomization.yaml",
        "kustomize/overlays/example/secret.example.yaml",
        "flux/kustomization.yaml",
        "flux/receiver.yaml",
        "flux/harbor-pull.example.yaml",
    ):
        assert expected in names
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_document_under_deploy_is_valid(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    assert deploy_problems(docs) == []


def test_the_validators_do_catch_mistakes_in_deploy_documents() -> None:
    deployment = find(objects([BASE / "deployment.yaml"]), "Deployment", "nakama")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert validate_documents([deployment])
    kustomization = find(
        objects([FLUX / "apps-kustomization.yaml"]), "Kustomization", "nakama-apps"
    )
    del kustomization["spec"]["prune"]
    assert validate_documents([kustomization])


def test_receiver_check_catches_what_the_spec_forbids() -> None:
    receiver = find(objects([FLUX / "receiver.yaml"]), "Receiver", "nakama-images")
    assert receiver_problems(receiver) == []
    for spoil in (
        lambda r: r["spec"].update(type="generic-sha"),
        lambda r: r["spec"].pop("secretRef"),
        lambda r: r["spec"].update(events=["push"]),
        lambda r: r["spec"]["resources"][0].pop("matchLabels"),
        lambda r: r["spec"]["resources"][0].update(kind="Deployment"),
        lambda r: r["spec"]["resources"][0].update(names="x"),
        lambda r: r["spec"].update(resources=[]),
    ):
        spoiled = json.loads(json.dumps(receiver))
        spoil(spoiled)
        assert receiver_problems(spoiled), spoil


def test_receiver_matches_what_nakama_build_sends_and_what_flux_manifests_render() -> None:
    receiver = find(objects([FLUX / "receiver.yaml"]), "Receiver", "nakama-images")
    # `nakama build` signs its ping the way generic-hmac checks it.
    assert receiver["spec"]["type"] == "generic-hmac"
    builder = (REPO_ROOT / "image_builder" / "build.py").read_text()
    assert '"X-Signature"' in builder and 'f"sha256={digest}"' in builder
    # It rescans exactly the ImageRepositories flux.manifests renders for apps.
    schemas = load_crd_schemas(default_reference_dir() / "flux" / "crds")
    rendered = render_manifests(
        AppProject(name="demo", repo_url="https://gitlab.example.com/nakama-apps/demo.git"),
        FluxSettings(),
        harbor=HarborSettings(),
        namespace=APPS_NAMESPACE,
    )
    image_repository = next(d for d in rendered if d["kind"] == "ImageRepository")
    (ref,) = receiver["spec"]["resources"]
    assert (ref["apiVersion"], ref["kind"]) == (image_repository["apiVersion"], "ImageRepository")
    assert (ref["apiVersion"], ref["kind"]) in schemas
    assert ref["namespace"] == image_repository["metadata"]["namespace"]
    assert ref["matchLabels"].items() <= image_repository["metadata"]["labels"].items()
    # Its token Secret is shown (with a placeholder) in the Receiver's namespace, key "token".
    secret = find(
        objects([FLUX / "receiver-token.example.yaml"]), "Secret", "nakama-receiver-token"
    )
    assert secret["metadata"]["namespace"] == receiver["metadata"]["namespace"]
    assert receiver["spec"]["secretRef"]["name"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {"token"}


def test_flux_objects_are_the_ones_app_manifests_refer_to() -> None:
    layout = GitOpsLayout()
    docs = objects(sorted(FLUX.glob("*.yaml")))
    source = find(docs, "GitRepository", layout.source_name)
    assert source["metadata"]["namespace"] == layout.source_namespace
    assert source["spec"]["ref"] == {"branch": FluxSettings().gitops_branch}
    assert source["spec"]["url"].endswith(f"/{FluxSettings().gitops_project}.git")
    auth = find(docs, "Secret", source["spec"]["secretRef"]["name"])
    assert set(auth["stringData"]) == {"username", "password"}
    apps = find(docs, "Kustomization", "nakama-apps")
    assert apps["spec"]["path"] == f"./{layout.kustomizations_path}"
    assert apps["spec"]["prune"] is True
    assert apps["spec"]["sourceRef"] == {"kind": "GitRepository", "name": layout.source_name}
    pull = find(docs, "Secret", layout.pull_secret)
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert pull["metadata"]["namespace"] == APPS_NAMESPACE
    assert "auths" in json.loads(pull["stringData"][".dockerconfigjson"])


# --- kustomizations ------------------------------------------------------------------------


def _entries(config: dict[str, Any]) -> Iterator[str]:
    yield from config.get("resources", [])
    yield from (p["path"] for p in config.get("patches", []) if "path" in p)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(DEPLOY)))
def test_kustomization_entries_exist_and_every_file_is_used(path: Path) -> None:
    (config,) = load_all(path)
    folder = path.parent
    listed = list(_entries(config))
    assert listed
    for entry in listed:
        target = (folder / entry).resolve()
        assert target.exists(), f"{path}: {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is no kustomization"
    used = {(folder / entry).resolve() for entry in listed}
    for other in folder.glob("*.yaml"):
        if other.name == "kustomization.yaml":
            continue
        if other.name.endswith(".example.yaml"):
            # Examples hold placeholder secrets: applying them would overwrite real ones.
            assert other.resolve() not in used, f"{other.name} must not be applied"
        else:
            assert other.resolve() in used, f"{other.name} is not listed in {path}"


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        command = [kubectl, "kustomize", str(folder)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    else:
        pytest.fail("kubectl (or kustomize) is needed to build the kustomizations: install kubectl")
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in YAML(typ="safe", pure=True).load_all(out) if d]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(DEPLOY)))
def test_each_kustomization_builds_into_valid_objects(path: Path) -> None:
    built = _kustomize(path.parent)
    assert built
    assert deploy_problems(built) == []
    # Secrets are created by the operator, never shipped by a kustomization.
    assert [d for d in built if d["kind"] == "Secret" and "stringData" in d] == []


def test_overlay_sets_hosts_image_and_settings_over_the_base() -> None:
    built = _kustomize(OVERLAY)
    base_settings = find(objects([BASE / "configmap.yaml"]), "ConfigMap", "nakama-settings")
    overlay_settings = find(objects([OVERLAY / "settings.yaml"]), "ConfigMap", "nakama-settings")
    data = find(built, "ConfigMap", "nakama-settings")["data"]
    assert data == {**base_settings["data"], **overlay_settings["data"]}
    (rule,) = find(built, "Ingress", "nakama")["spec"]["rules"]
    assert rule["host"] == "nakama.example.org"
    assert data["NAKAMA_PUBLIC_URL"] == f"https://{rule['host']}"
    (container,) = find(built, "Deployment", "nakama")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "harbor.example.org/nakama/nakama:0.1.0"
    # The apps' init container runs the same platform image.
    assert data["NAKAMA_FLUX__RELOADER_IMAGE"] == container["image"]
    for doc in built:
        if doc["kind"] not in ("Namespace",):
            assert doc["metadata"].get("namespace") in ("nakama", APPS_NAMESPACE), doc["kind"]


# --- the platform Deployment and its settings ----------------------------------------------


def setting_field(env: str) -> FieldInfo | None:
    """The Settings field a ``NAKAMA_...`` variable sets, or None if it sets none."""
    parts = env.removeprefix("NAKAMA_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i == len(parts) - 1:
            return field
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None


def test_every_setting_deploy_sets_exists_and_the_overlay_builds_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configmaps = [
        find(objects([BASE / "configmap.yaml"]), "ConfigMap", "nakama-settings")["data"],
        find(objects([OVERLAY / "settings.yaml"]), "ConfigMap", "nakama-settings")["data"],
    ]
    secret = find(objects([OVERLAY / "secret.example.yaml"]), "Secret", "nakama-secrets")
    deployment = find(objects([BASE / "deployment.yaml"]), "Deployment", "nakama")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    merged = {**configmaps[0], **configmaps[1], **secret["stringData"], **env}
    for name in merged:
        if name.startswith("NAKAMA_"):
            assert setting_field(name) is not None, f"{name} is no setting"
    # Placeholders only, never a real secret.
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    for name in list(os.environ):
        if name.startswith("NAKAMA_"):
            monkeypatch.delenv(name)
    for name, value in merged.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="NAKAMA_ADMIN_TOKEN must be at least 32"):
        Settings()  # the placeholder admin token is refused: too short
    monkeypatch.setenv("NAKAMA_ADMIN_TOKEN", "a-real-one-is-set-here-0123456789abcdef")
    settings = Settings()
    assert settings.mode == "cluster"
    assert settings.kubernetes.namespace == APPS_NAMESPACE
    assert settings.admin_token is not None and settings.gitlab.token is not None
    assert settings.db_url.startswith("postgresql+psycopg://")


def test_deployment_runs_nakama_up_locked_down() -> None:
    docs = objects([BASE / "deployment.yaml", BASE / "configmap.yaml", BASE / "service.yaml"])
    deployment = find(docs, "Deployment", "nakama")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    listen = ["--host", "0.0.0.0", "--port", "8000"]  # noqa: S104 - in a pod, on purpose
    assert container["command"] == ["nakama", "up", *listen]
    assert {"name": "NAKAMA_MODE", "value": "cluster"} in container["env"]
    refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
    assert refs == ["nakama-settings", "nakama-secrets"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["serviceAccountName"] == "nakama"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == PLATFORM_UID
    locked = container["securityContext"]
    assert locked["readOnlyRootFilesystem"] is True
    assert locked["allowPrivilegeEscalation"] is False
    assert locked["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    data_dir = Path(find(docs, "ConfigMap", "nakama-settings")["data"]["NAKAMA_DATA_DIR"])
    # The data dir is a sub-folder of a writable volume: nakama up chmods it, which only its
    # owner may do, and an emptyDir's root belongs to root.
    assert str(data_dir.parent) in mounts and data_dir != data_dir.parent
    assert set(container["resources"]) == {"requests", "limits"}
    service = find(docs, "Service", "nakama")
    assert service["spec"]["ports"][0]["port"] == 80
    assert container["ports"][0]["containerPort"] == 8000


# --- RBAC ----------------------------------------------------------------------------------

# (API group, resource, verb) -> why Nakama needs it. The nakama Role grants exactly these.
NEEDED: dict[tuple[str, str, str], str] = {
    ("apps", "deployments", "get"): "restart and rollout wait (code_reloader), app status",
    ("apps", "deployments", "patch"): "the restartedAt / commit annotation patch",
    ("apps", "deployments", "list"): "app status across apps (the reconciler, planned)",
    ("apps", "deployments", "watch"): "noticing rollouts without polling (planned)",
    ("", "pods", "get"): "one pod's state for status (planned)",
    ("", "pods", "list"): "the delete-pods restart; the newest pod for logs",
    ("", "pods", "delete"): "the delete-pods restart method",
    ("", "pods/log", "get"): "an app's log (cluster runtime)",
    ("", "secrets", "create"): "each app's git token Secret <app>-git",
    ("", "secrets", "get"): "each app's git token Secret",
    ("", "secrets", "update"): "completing an app's git token Secret",
    ("", "secrets", "delete"): "deleting an app",
    ("", "persistentvolumeclaims", "delete"): "deleting an app's data volume <app>-data",
    ("", "configmaps", "create"): "each app's build record ConfigMap <app>-builds",
    ("", "configmaps", "get"): "adding a build to the record",
    ("", "configmaps", "update"): "adding a build to the record",
    ("", "configmaps", "delete"): "deleting an app",
}
# What code_reloader/restart.py calls: the reloader pipeline's Role grants exactly this.
RESTART_NEEDS = {
    ("apps", "deployments", "get"),
    ("apps", "deployments", "patch"),
    ("", "pods", "list"),
    ("", "pods", "delete"),
}
# Kubernetes client method name parts -> RBAC. A new kind of call fails the test until it is
# added here, to NEEDED and to the Role.
VERBS = {
    "read": "get",
    "list": "list",
    "patch": "patch",
    "delete": "delete",
    "create": "create",
    "replace": "update",
    "delete_collection": "deletecollection",
}
KINDS = {
    "deployment": ("apps", "deployments"),
    "deployment_status": ("apps", "deployments/status"),
    "deployment_scale": ("apps", "deployments/scale"),
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "secret": ("", "secrets"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "config_map": ("", "configmaps"),
}
_METHOD = re.compile(
    r"^(?P<verb>read|list|patch|delete_collection|delete|create|replace)_"
    r"(?P<scope>namespaced_)?(?P<kind>[a-z_]+?)(?:_with_http_info)?$"
)
_API_CLASSES = [
    getattr(kubernetes.client, name)
    for name in dir(kubernetes.client)
    if re.match(r"^[A-Z]\w*V\d\w*Api$", name)
]


def first_party_sources() -> list[Path]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [REPO_ROOT / pattern.rstrip("*") for pattern in include]
    return sorted(p for package in packages for p in package.rglob("*.py"))


def kube_calls(path: Path) -> set[str]:
    """Names of Kubernetes client API methods the module refers to (``apps.patch_...``)."""
    names = {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
    }
    return {n for n in names if _METHOD.match(n) and any(hasattr(c, n) for c in _API_CLASSES)}


def rbac_of(method: str) -> tuple[str, str, str]:
    match = _METHOD.match(method)
    assert match, method
    assert match["scope"], f"{method} is cluster-scoped: it would need a ClusterRole"
    assert match["kind"] in KINDS, f"add {match['kind']!r} (from {method}) to KINDS"
    group, resource = KINDS[match["kind"]]
    return (group, resource, VERBS[match["verb"]])


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_call_table_is_real() -> None:
    """Every (kind, verb) the tables name is a method of the kubernetes client."""
    for kind in KINDS:
        for prefix in VERBS:
            name = f"{prefix}_namespaced_{kind}"
            if any(hasattr(c, name) for c in _API_CLASSES):
                assert rbac_of(name)[1] == KINDS[kind][1]
    assert rbac_of("patch_namespaced_deployment") == ("apps", "deployments", "patch")
    assert rbac_of("read_namespaced_pod_log") == ("", "pods/log", "get")
    assert kube_calls(REPO_ROOT / "code_reloader" / "restart.py")


# No escalate, bind, impersonate or deletecollection for anyone.
SAFE_VERBS = {"get", "list", "watch", "patch", "create", "update", "delete"}


def test_no_cluster_wide_rbac_and_no_wildcards() -> None:
    docs = objects(YAML_FILES)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert roles
    for role in roles:
        assert role["metadata"]["namespace"] == APPS_NAMESPACE
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], key)
            assert "nonResourceURLs" not in rule
            assert set(rule["verbs"]) <= SAFE_VERBS, role["metadata"]["name"]
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["metadata"]["namespace"] == APPS_NAMESPACE
        find(roles, "Role", binding["roleRef"]["name"])


def test_platform_role_grants_exactly_the_listed_verbs_bound_to_the_platform() -> None:
    docs = objects([BASE / "rbac.yaml", BASE / "serviceaccount.yaml"])
    role = find(docs, "Role", "nakama")
    assert granted(role) == set(NEEDED)
    binding = find(docs, "RoleBinding", "nakama")
    account = find(docs, "ServiceAccount", "nakama")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nakama", "namespace": account["metadata"]["namespace"]}
    ]


def test_every_kubernetes_call_in_the_code_is_needed_and_granted() -> None:
    role = find(objects([BASE / "rbac.yaml"]), "Role", "nakama")
    calls = {path: kube_calls(path) for path in first_party_sources()}
    found = {rbac_of(name) for names in calls.values() for name in names}
    assert found, "no Kubernetes client call found: the scan is broken"
    unlisted = found - set(NEEDED)
    assert not unlisted, f"calls not in NEEDED (and so not granted): {sorted(unlisted)}"
    assert found <= granted(role)
    # code_reloader/restart.py's calls are what RESTART_NEEDS says, by name.
    restart = {rbac_of(n) for n in calls[REPO_ROOT / "code_reloader" / "restart.py"]}
    assert restart == RESTART_NEEDS


def test_reloader_pipeline_role_grants_exactly_what_nakama_reload_restart_calls() -> None:
    docs = objects([RELOADER_PIPELINE / "rbac.yaml"])
    role = find(docs, "Role", "nakama-reloader-pipeline")
    cli = {
        rbac_of(name)
        for module in ("restart.py", "restart_cli.py")
        for name in kube_calls(REPO_ROOT / "code_reloader" / module)
    }
    assert granted(role) == cli == RESTART_NEEDS
    token = find(docs, "Secret", "nakama-reloader-pipeline-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    account = token["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    find(docs, "ServiceAccount", account)


# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in joined.splitlines()]
    pairs = [ln.split(None, 1) for ln in lines if ln and not ln.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def test_dockerfile_base_user_and_entrypoint() -> None:
    steps = dockerfile_instructions()
    froms = [args for op, args in steps if op == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [args for op, args in steps if op == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] == str(PLATFORM_UID)
    (entrypoint,) = [args for op, args in steps if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["nakama"]
    runs = " ".join(args for op, args in steps if op == "RUN")
    for package in ("git", "buildah"):
        assert re.search(rf"apt-get install [^&]*\b{package}\b", runs), package
    # The wheel, not the source tree (tests/e2e/test_wheel_install.py runs these commands).
    assert "pip wheel --no-deps -w /tmp/wheels /src" in runs
    assert 'pip install "$(ls /tmp/wheels/nakama-*.whl)[cluster,postgres]"' in runs
    assert "pip install -e" not in runs and "pip install /src" not in runs


def test_dockerfile_copies_the_package_with_its_data_and_no_secrets() -> None:
    steps = dockerfile_instructions()
    copies = [args.split() for op, args in steps if op in ("COPY", "ADD")]
    assert all(op != "ADD" for op, _ in steps), "COPY only: ADD fetches URLs and unpacks"
    sources = {src for args in copies for src in args[:-1] if not src.startswith("--")}
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.split(".")[0].rstrip("*") for pattern in include}  # top-level names
    allowed = {"pyproject.toml", "README.md", "MANIFEST.in", *packages}
    assert packages <= sources, f"not copied: {packages - sources}"
    assert sources <= allowed, f"copies more than the package needs: {sources - allowed}"
    assert {"MANIFEST.in", "app_starter_kit"} <= sources, "the wheel's package data"
    secretish = re.compile(r"(?i)(token|password|passwd|secret|credential|api_?key|private)")
    for op, args in steps:
        if op in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(args), f"{op} {args}"
    assert not re.search(r"(?i)(\.env\b|\.git\b|kubeconfig|id_rsa|\.pem\b)", " ".join(sources))


# --- the install guide ---------------------------------------------------------------------

# Settings the guide's table must list (with their defaults): every field of the cluster parts,
# and the top-level and shared ones a cluster installation sets or should know.
CLUSTER_PARTS = {
    "gitlab": GitLabSettings,
    "harbor": HarborSettings,
    "kubernetes": KubernetesSettings,
    "flux": FluxSettings,
}
ALSO_DOCUMENTED = [
    "NAKAMA_MODE",
    "NAKAMA_PUBLIC_URL",
    "NAKAMA_DATABASE_URL",
    "NAKAMA_ADMIN_TOKEN",
    "NAKAMA_DATA_DIR",
    "NAKAMA_STARTER_KIT_DIR",
    "NAKAMA_LOG_FORMAT",
    "NAKAMA_LOG_LEVEL",
    "NAKAMA_JOB_WORKERS",
    "NAKAMA_RECEIVER__MAX_BODY_BYTES",
    "NAKAMA_PLANNING__DEPLOY_BRANCH",
    "NAKAMA_PLANNING__DEPENDENCY_FILES",
    "NAKAMA_BUILDER__BUILD_TIMEOUT_S",
]
_ENV_NAME = re.compile(r"\bNAKAMA_[A-Z0-9]+(?:_{1,2}[A-Z0-9]+)*\b")


def cluster_setting_names() -> list[str]:
    names = [
        f"NAKAMA_{part.upper()}__{field.upper()}"
        for part, model in CLUSTER_PARTS.items()
        for field in model.model_fields
    ]
    return [*ALSO_DOCUMENTED, *names]


def shown_default(field: FieldInfo) -> str | None:
    """How the guide writes a default; None where it explains it in words."""
    if field.default_factory is not None or isinstance(field.default, tuple):
        return None
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def not_settings() -> set[str]:
    """NAKAMA_* names that are not settings: CI variables of the templates, the init
    container's environment, the test suite's reference folder."""
    texts = [p.read_text() for p in sorted((REPO_ROOT / "gitlab-ci-templates").glob("*.yml"))]
    texts.append((REPO_ROOT / "flux" / "manifests.py").read_text())
    names = {name for text in texts for name in _ENV_NAME.findall(text)}
    return {name for name in names if setting_field(name) is None} | {REFERENCE_ENV}


def test_guide_names_only_real_settings_and_variables() -> None:
    text = GUIDE.read_text()
    named = set(_ENV_NAME.findall(text))
    assert named
    unknown = {n for n in named if setting_field(n) is None} - not_settings()
    assert not unknown, f"the guide names variables nothing reads: {sorted(unknown)}"


def test_guide_lists_every_cluster_setting_with_its_default() -> None:
    rows = [ln for ln in GUIDE.read_text().splitlines() if ln.startswith("| `NAKAMA_")]
    by_name = {ln.split("`")[1]: ln for ln in rows}
    for name in cluster_setting_names():
        assert name in by_name, f"{name} missing from the settings table"
        field = setting_field(name)
        assert field is not None, name
        expected = shown_default(field)
        if expected is not None:
            assert expected in by_name[name].split("|")[2], f"{name}: default {expected}"


def test_guide_lists_the_ci_variables_of_both_templates() -> None:
    text = GUIDE.read_text()
    for template in sorted((REPO_ROOT / "gitlab-ci-templates").glob("*.yml")):
        header = template.read_text().split("CI/CD variables the operator sets", 1)[1]
        operator_part = header.split("\n#\n", 1)[0]
        names = set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)\s", operator_part, re.M))
        assert names, template.name
        for name in names:
            assert f"`{name}`" in text, f"{template.name}: {name} not in the guide"


def _help(main: Callable[[list[str]], int]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--help"]) == 0
    return out.getvalue()


def _cli_options(path: list[str]) -> set[str]:
    """The options of ``nakama <path>`` as typer declares them (typer vendors its own click, so
    the command tree is walked through its ``commands`` and ``params``)."""
    command: Any = typer.main.get_command(cli_app)
    for word in path:
        children = getattr(command, "commands", None)
        assert children is not None, f"nakama {' '.join(path)}: {word} has no sub-commands"
        assert word in children, f"no command nakama {' '.join(path)}"
        command = children[word]
    return {option for param in command.params for option in getattr(param, "opts", [])}


PASS_THROUGH: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("build",): build_main,
    ("reload", "sync"): sync_main,
    ("reload", "restart"): restart_main,
    ("flux", "render"): render_main,
    ("flux", "validate"): validate_main,
}


def guide_commands() -> list[str]:
    """``nakama ...`` command lines in the guide's code blocks, continuations joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", GUIDE.read_text(), re.S)
    lines = [ln.strip() for block in blocks for ln in re.sub(r"\\\n", " ", block).splitlines()]
    return [ln for ln in lines if re.match(r"^(\$ )?nakama ", ln)]


def test_guide_commands_and_their_options_exist() -> None:
    commands = guide_commands()
    assert commands
    for line in commands:
        words = line.removeprefix("$ ").split()[1:]
        path = [w for w in words[:2] if re.match(r"^[a-z]+$", w)]
        for size in (2, 1):
            if tuple(path[:size]) in PASS_THROUGH:
                path = path[:size]
                options = set(re.findall(r"--[a-z-]+", _help(PASS_THROUGH[tuple(path)])))
                break
        else:
            path = path[:1]
            options = _cli_options(path)
        _cli_options(path)  # the command exists in the CLI itself, not only as a function
        for option in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", line):
            assert option in options, f"{line}: nakama {' '.join(path)} has no {option}"


def test_guide_refers_to_files_that_exist() -> None:
    text = GUIDE.read_text()
    refs = set(re.findall(r"`((?:deploy|gitlab-ci-templates|docs)/[\w./-]*|[\w/]+\.py)`", text))
    assert refs
    for ref in refs:
        assert (REPO_ROOT / ref).exists(), ref


def test_each_app_object_has_one_flux_owner() -> None:
    """Review D14: kustomize-controller walks a Kustomization's path recursively, so a
    Kustomization whose path is a parent of the per-app Kustomizations' folder, or of the apps'
    folders, applies those objects a second time under a second owner. deploy/flux's only
    Kustomization of that folder is nakama-apps, no path in deploy/flux is a parent of either,
    and the two folders are apart (the docs' bootstrap advice, clusters/<cluster-name>, too)."""
    layout = GitOpsLayout()
    folders = [layout.kustomizations_path, app_dir("demo", FluxSettings()).rsplit("/", 1)[0]]

    def under(path: str, parent: str) -> bool:
        return path == parent or path.startswith(parent.rstrip("/") + "/")

    kustomizations = [
        d for d in objects(sorted(FLUX.glob("*.yaml"))) if d["kind"] == "Kustomization"
    ]
    assert kustomizations
    for doc in kustomizations:
        path = doc["spec"]["path"].removeprefix("./").strip("/")
        for folder in folders:
            if path == folder:
                assert doc["metadata"]["name"] == "nakama-apps" and folder == folders[0]
            else:
                assert not under(folder, path), (doc["metadata"]["name"], path, folder)
    assert not under(folders[0], folders[1]) and not under(folders[1], folders[0])
    assert not under(folders[0], "clusters/my-cluster")
    assert "not a parent of `clusters/nakama/apps`" in " ".join(
        (REPO_ROOT / "docs" / "cluster-install.md").read_text().split()
    )
