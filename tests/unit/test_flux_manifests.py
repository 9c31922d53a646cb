"""flux.manifests: the rendered objects, the image-policy semantics, and the golden files.

The golden files under ``tests/golden/flux/<case>/`` are the exact text written to the GitOps
repository. After an intended change, regenerate them and review the diff::

    NAKAMA_UPDATE_GOLDEN=1 python3 -m pytest tests/unit/test_flux_manifests.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flux.gateway import gateway_file, render_gateway_service
from flux.manifests import (
    COMMIT_ANNOTATION,
    AppProject,
    GitOpsLayout,
    Resources,
    gateway_paths,
    render_files,
    render_manifests,
    tag_filter_pattern,
    to_yaml,
)
from nakama.errors import InvalidInput
from nakama.limits import AppLimits
from nakama.settings import FluxSettings, HarborSettings
from nakama.tagging import TAG_PATTERN, image_tag, tag_timestamp

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "flux"
NOW = datetime(2026, 11, 22, 4, 5, 6, tzinfo=UTC)
SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
NAMESPACE = "nakama-apps"

CASES: dict[str, tuple[AppProject, FluxSettings, HarborSettings, GitOpsLayout]] = {
    "demo": (
        AppProject(
            name="demo",
            repo_url="https://gitlab.example.com/nakama-apps/demo.git",
            initial_commit=SHA,
        ),
        FluxSettings(),
        HarborSettings(),
        GitOpsLayout(),
    ),
    "sales-dashboard": (
        AppProject(
            name="sales-dashboard",
            repo_url="https://gitlab.example.com/nakama-apps/sales-dashboard.git",
            branch="release/2026",
            tag="release-2026-da156088-20261122040506",
            initial_commit=SHA,
            health_path="/healthz",
            port=8080,
            command=("python", "-m", "uvicorn", "main:app", "--port", "$(PORT)"),
            resources=Resources(cpu_request_m=250),
            storage="2Gi",
            visibility="internal",
            # An autoscaler: the Deployment says no replicas, the HPA owns the number.
            limits=AppLimits(
                memory_mib=3072,
                cpu=1.5,
                processes=512,
                disk_mib=10240,
                replicas=2,
                autoscale_max=6,
                autoscale_cpu_percent=70,
            ),
        ),
        FluxSettings(
            apps_path="tenants/apps",
            app_domain="apps.corp.example",
            ingress_class="nginx",
            gitops_branch="production",
            image_scan_interval_s=90,
        ),
        HarborSettings(url="http://harbor.internal:8080", project="team-a"),
        GitOpsLayout(
            tls_secret="apps-wildcard-tls",
            storage_class="fast",
            volume_access_mode="ReadWriteMany",  # the pods may spread over nodes
            source_namespace="gitops-system",
            kustomizations_path="clusters/prod/apps",
            ingress_namespace_labels={"platform.corp.example/ingress": "true"},
            ingress_pod_labels={"app": "edge-proxy"},
        ),
    ),
    # Traefik, a per-app certificate from cert-manager, Nakama behind its own port.
    # Two fixed replicas on ReadWriteOnce volumes: kept on one node.
    "team-wiki": (
        AppProject(
            name="team-wiki",
            repo_url="https://gitlab.example.com/nakama-apps/team-wiki.git",
            initial_commit=SHA,
            limits=AppLimits(memory_mib=512, cpu=0.25, processes=128, disk_mib=300, replicas=2),
        ),
        FluxSettings(
            ingress_class="traefik",
            ingress_controller="traefik",
            nakama_internal_url="http://nakama.platform.svc.cluster.local:8000",
            nakama_public_url="https://nakama.corp.example/",
            cert_issuer="letsencrypt",
        ),
        HarborSettings(),
        GitOpsLayout(),
    ),
    # Public: no forward-auth, whatever the controller.
    "open-data": (
        AppProject(
            name="open-data",
            repo_url="https://gitlab.example.com/nakama-apps/open-data.git",
            initial_commit=SHA,
            visibility="public",
        ),
        FluxSettings(cert_issuer="letsencrypt"),
        HarborSettings(),
        GitOpsLayout(),
    ),
}
GATEWAY_CASE = "nakama-gateway"  # the apps' shared Service, rendered once


def render(case: str = "demo", **changes: Any) -> list[dict[str, Any]]:
    project, settings, harbor, layout = CASES[case]
    if changes:
        project = AppProject(**{**project.__dict__, **changes})
    return render_manifests(project, settings, harbor=harbor, namespace=NAMESPACE, layout=layout)


def files(case: str) -> dict[str, str]:
    if case == GATEWAY_CASE:
        service = render_gateway_service(FluxSettings(), namespace=NAMESPACE)
        return {gateway_file(GitOpsLayout().kustomizations_path): to_yaml([service])}
    project, settings, harbor, layout = CASES[case]
    return render_files(project, settings, harbor=harbor, namespace=NAMESPACE, layout=layout)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and "." not in d["metadata"]["name"]]
    return doc


def gateway_ingress(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == "Ingress" and "." in d["metadata"]["name"]]
    return doc


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def flux_latest(tags: list[str], pattern: str, extract: str) -> str | None:
    """image-reflector's filter + numerical asc: unanchored search, expand, ParseFloat, max."""
    regexp = re.compile(pattern)
    candidates: list[tuple[float, str]] = []
    for tag in tags:
        match = regexp.search(tag)
        if not match:
            continue
        # Go's $name / ${name} as Python's \g<name>, then Regexp.ExpandString.
        value = match.expand(re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", extract))
        candidates.append((float(value), tag))
    return max(candidates)[1] if candidates else None


@pytest.mark.parametrize("case", [*sorted(CASES), GATEWAY_CASE])
def test_matches_golden_files(case: str) -> None:
    rendered = files(case)
    folder = GOLDEN / case
    if os.environ.get("NAKAMA_UPDATE_GOLDEN") == "1":
        for stale in folder.rglob("*.yaml") if folder.exists() else []:
            stale.unlink()
        for relative, text in rendered.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text)
    on_disk = {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*.yaml")}
    assert sorted(on_disk) == sorted(rendered), "set NAKAMA_UPDATE_GOLDEN=1 to regenerate"
    for relative, text in rendered.items():
        assert text == on_disk[relative], f"{relative} differs; NAKAMA_UPDATE_GOLDEN=1 regenerates"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_is_deterministic(case: str) -> None:
    assert files(case) == files(case)


@pytest.mark.parametrize(
    ("case", "replicas", "mode"),
    [
        ("demo", 1, "ReadWriteOnce"),
        ("open-data", 1, "ReadWriteOnce"),
        ("team-wiki", 2, "ReadWriteOnce"),
        ("sales-dashboard", None, "ReadWriteMany"),  # the autoscaler's
    ],
)
def test_deployment_is_recreated_with_the_replicas_and_volumes_of_its_limits(
    case: str, replicas: int | None, mode: str
) -> None:
    docs = render(case)
    spec = by_kind(docs, "Deployment")["spec"]
    assert spec.get("replicas") == replicas
    assert spec["strategy"] == {"type": "Recreate"}
    name = CASES[case][0].name
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert sorted(pvcs) == [f"{name}-code", f"{name}-data"]
    assert {tuple(p["spec"]["accessModes"]) for p in pvcs.values()} == {(mode,)}
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(docs)["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [f"{name}-code", f"{name}-data"]


@pytest.mark.parametrize(
    ("case", "marker"),
    [("demo", "nakama-apps:demo"), ("sales-dashboard", "nakama-apps:sales-dashboard")],
)
def test_setter_markers_are_on_the_image_line_and_the_init_containers_tag(
    case: str, marker: str
) -> None:
    """Two setters, one policy: the app container's image and the tag the init container weighs
    against its restart annotation (nakama.build_record), so they always name the same build."""
    rendered = files(case)
    hits = [
        (path, line.strip())
        for path, text in rendered.items()
        for line in text.splitlines()
        if '"$imagepolicy"' in line
    ]
    assert len(hits) == 2
    assert all(path.endswith("/deployment.yaml") for path, _ in hits)
    (_, image_line), (_, tag_line) = sorted(hits, key=lambda h: not h[1].startswith("image:"))
    key, _, rest = image_line.partition(": ")
    image, _, comment = rest.partition(" # ")
    assert key == "image"
    assert json.loads(comment) == {"$imagepolicy": marker}
    pod = pod_spec(render(case))
    app = pod["containers"][0]
    assert image == app["image"]
    tag = CASES[case][0].tag or "main-00000000-19700101000000"
    assert image.rsplit(":", 1)[1] == tag
    key, _, rest = tag_line.partition(": ")
    value, _, comment = rest.partition(" # ")
    assert (key, value) == ("value", tag)
    assert json.loads(comment) == {"$imagepolicy": f"{marker}:tag"}
    [env] = [e for e in pod["initContainers"][0]["env"] if e["name"] == "NAKAMA_IMAGE_TAG"]
    assert env["value"] == tag


@pytest.mark.parametrize("branch", ["main", "release/2026", "feature_x.y", "UPPER-Case"])
def test_policy_pattern_accepts_every_tag_the_builder_makes(branch: str) -> None:
    pattern = tag_filter_pattern(branch)
    assert pattern.startswith("^") and pattern.endswith("$")  # Flux matches unanchored
    for step in range(50):
        sha = f"{(step * 7919) % 2**160:040x}"
        tag = image_tag(branch=branch, sha=sha, now=NOW + timedelta(minutes=step * 37))
        match = re.search(pattern, tag)
        assert match, tag
        assert match.group("ts") == tag_timestamp(tag)
        assert re.fullmatch(TAG_PATTERN, tag)


@pytest.mark.parametrize(
    "tag",
    [
        "develop-da156088-20261122040506",  # another branch
        "xmain-da156088-20261122040506",
        "main-da156088-2026112204050",  # 13 digits
        "main-da156088-202611220405060",
        "main-DA156088-20261122040506",  # the builder writes lower-case hex
        "main-da15608-20261122040506",
        "main-da156088-20261122040506.sig",  # cosign signature tags
        "main-da156088-20261122040506-1",
        "main-da156088-2026112204050x",
        "latest",
        "sha256-0123",
    ],
)
def test_policy_pattern_rejects_other_tags(tag: str) -> None:
    # One non-numeric extract fails the whole numerical policy, so strictness matters.
    assert re.search(tag_filter_pattern("main"), tag) is None


def test_numerical_asc_picks_the_newest_timestamp() -> None:
    policy = by_kind(render(), "ImagePolicy")["spec"]
    assert policy["policy"] == {"numerical": {"order": "asc"}}
    times = [NOW - timedelta(days=400), NOW + timedelta(seconds=1), NOW, NOW - timedelta(hours=5)]
    shas = ["f" * 40, "0" * 40, "e" * 40, "a" * 40]  # sha order is not time order
    tags = [image_tag(branch="main", sha=s, now=t) for s, t in zip(shas, times, strict=True)]
    newer_elsewhere = image_tag(branch="develop", sha="b" * 40, now=NOW + timedelta(days=1))
    noise = ["latest", "main-ffffffff-99999999999999.sig", newer_elsewhere]
    latest = flux_latest(
        tags + noise, policy["filterTags"]["pattern"], policy["filterTags"]["extract"]
    )
    assert latest == tags[1]
    assert flux_latest(["latest"], policy["filterTags"]["pattern"], "$ts") is None


@pytest.mark.parametrize("case", sorted(CASES))
def test_names_are_dns_safe(case: str) -> None:
    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for doc in render(case):
        name = doc["metadata"]["name"]
        # The /_nakama/ Ingress has a dot, which no app name has: it is never another app's.
        if doc["kind"] == "Ingress" and "." in name:
            app, _, rest = name.partition(".")
            assert (app, rest) == (CASES[case][0].name, "nakama-gateway")
            continue
        assert label.match(name) and len(name) <= 63, name
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"] == {
            "app.kubernetes.io/name": CASES[case][0].name,
            "app.kubernetes.io/managed-by": "nakama",
        }
    assert re.match(r"^[a-z]", by_kind(render(case), "Service")["metadata"]["name"])


def test_longest_name_still_fits() -> None:
    docs = render(name="a" * 40)
    assert all(len(d["metadata"]["name"]) <= 63 for d in docs)
    assert len(by_kind(docs, "Ingress")["spec"]["rules"][0]["host"].split(".")[0]) <= 63


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Demo"}, "upper-case"),
        ({"name": "2024-report"}, "must start with a letter"),
        ({"name": "a" * 41}, "at most 40"),
        ({"tag": "bad tag"}, "image tag"),
        ({"initial_commit": "da156088"}, "full lower-case hash"),
        ({"branch": "-x"}, "branch"),
        ({"branch": "a b"}, "branch"),
        ({"repo_url": "git@gitlab.example.com:a/b.git"}, "http"),
        ({"health_path": "healthz"}, "health path"),
        ({"port": 0}, "port"),
        ({"command": ()}, "command"),
        ({"visibility": "secret"}, "visibility 'secret'"),
        ({"name": "nakama-gateway"}, "has a Service of that name"),
    ],
)
def test_bad_input_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        render(**changes)


def test_bad_namespace_is_refused() -> None:
    project, settings, harbor, _ = CASES["demo"]
    with pytest.raises(InvalidInput, match="namespace"):
        render_manifests(project, settings, harbor=harbor, namespace="Apps_NS")


def test_init_container_syncs_the_annotated_commit() -> None:
    spec = pod_spec(render())
    (sync,) = spec["initContainers"]
    assert sync["image"] == FluxSettings().reloader_image
    env = {e["name"]: e for e in sync["env"]}
    assert env["NAKAMA_COMMIT"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{COMMIT_ANNOTATION}']"
    )
    assert env["NAKAMA_INITIAL_COMMIT"]["value"] == SHA
    assert env["NAKAMA_REPO"]["value"] == CASES["demo"][0].repo_url
    script = sync["command"][-1]
    for arg in (
        "nakama reload sync",
        "--root /code",
        "--link current",
        "--password-file /var/run/nakama/git-token",
    ):
        assert arg in script
    token = next(v for v in spec["volumes"] if v["name"] == "git-token")
    assert token["secret"]["secretName"] == "demo-git"
    # Flux must not own the annotation, or every reconcile would undo the last reload.
    assert "annotations" not in by_kind(render(), "Deployment")["spec"]["template"]["metadata"]
    assert all(f"{COMMIT_ANNOTATION}:" not in text for text in files("demo").values())


@pytest.mark.parametrize(
    ("annotation", "initial", "expected"),
    [
        (SHA, "b" * 40, SHA),  # a reload set the annotation: it wins
        ("", "b" * 40, "b" * 40),  # before the first reload
        ("", None, None),  # nothing to sync: fail with a message
    ],
)
def test_sync_script_picks_the_commit(
    annotation: str, initial: str | None, expected: str | None, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NAKAMA_REPO": "https://g.example/a.git",
        "NAKAMA_COMMIT": annotation,
    }
    if initial:
        env["NAKAMA_INITIAL_COMMIT"] = initial
    # Replace the command with one that prints its arguments, one per line.
    script = pod_spec(render())["initContainers"][0]["command"][-1]
    script = script.replace("exec nakama reload sync", "printf '%s\\n' sync")
    data = tmp_path / "data"  # the data volume, empty and owned by the pod's user
    data.mkdir()
    script = script.replace("/data/", f"{data}/")
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
    assert (data / "home").is_dir()  # $HOME of the app container exists before it starts
    if expected is None:
        assert done.returncode != 0
        assert COMMIT_ANNOTATION in done.stderr
    else:
        args = done.stdout.splitlines()
        assert args[args.index("--commit") + 1] == expected
        assert args[args.index("--repo") + 1] == "https://g.example/a.git"


def test_without_initial_commit_the_annotation_is_required() -> None:
    env = {e["name"] for e in pod_spec(render(initial_commit=None))["initContainers"][0]["env"]}
    assert "NAKAMA_INITIAL_COMMIT" not in env


def test_app_container_runs_the_synced_code_locked_down() -> None:
    spec = pod_spec(render())
    (app,) = spec["containers"]
    assert app["workingDir"] == "/code/current"
    assert "command" not in app  # the image's CMD, which the builder derives from nakama.toml
    assert app["env"] == [
        {"name": "PORT", "value": "8501"},
        {"name": "HOME", "value": "/data/home"},
        {"name": "DATA_DIR", "value": "/data"},
    ]
    assert app["ports"] == [{"name": "http", "containerPort": 8501, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}
    assert app["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},  # LimitsSettings' defaults
    }
    for container in (app, spec["initContainers"][0]):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["fsGroup"] == pod_security["runAsGroup"]
    assert spec["enableServiceLinks"] is False
    assert spec["imagePullSecrets"] == [{"name": "harbor-pull"}]


def test_custom_app_settings_reach_the_container() -> None:
    (app,) = pod_spec(render("sales-dashboard"))["containers"]
    assert app["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert app["command"][:3] == ["python", "-m", "uvicorn"]
    assert app["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1500m", "memory": "3Gi"},
    }
    assert app["image"] == "harbor.internal:8080/team-a/sales-dashboard:" + (
        "release-2026-da156088-20261122040506"
    )


def test_service_and_ingress_route_to_the_app() -> None:
    docs = render()
    service = by_kind(docs, "Service")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["selector"] == by_kind(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    ingress = by_kind(docs, "Ingress")["spec"]
    assert ingress["rules"][0]["host"] == "demo.apps.example.com"
    assert ingress["rules"][0]["http"]["paths"] == [
        {
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": "demo", "port": {"name": "http"}}},
        }
    ]
    assert "ingressClassName" not in ingress and "tls" not in ingress
    custom = by_kind(render("sales-dashboard"), "Ingress")["spec"]
    assert custom["ingressClassName"] == "nginx"
    assert custom["tls"] == [
        {"hosts": ["sales-dashboard.apps.corp.example"], "secretName": "apps-wildcard-tls"}
    ]


def test_image_automation_targets_the_app_folder() -> None:
    docs = render("sales-dashboard")
    scan = by_kind(docs, "ImageRepository")["spec"]
    assert scan == {
        "image": "harbor.internal:8080/team-a/sales-dashboard",
        "interval": "90s",
        "secretRef": {"name": "harbor-pull"},
        "insecure": True,
    }
    assert re.search(
        by_kind(docs, "ImagePolicy")["spec"]["filterTags"]["pattern"],
        "release-2026-da156088-20261122040506",
    )
    automation = by_kind(docs, "ImageUpdateAutomation")["spec"]
    kustomization = by_kind(docs, "Kustomization")["spec"]
    assert automation["update"] == {"path": "./tenants/apps/sales-dashboard", "strategy": "Setters"}
    assert kustomization["path"] == automation["update"]["path"]
    assert kustomization["prune"] is True
    source = {"kind": "GitRepository", "name": "gitops", "namespace": "gitops-system"}
    assert automation["sourceRef"] == kustomization["sourceRef"] == source
    assert automation["git"]["push"] == {"branch": "production"}
    assert ".Updated" not in automation["git"]["commit"]["messageTemplate"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_kustomization_config_lists_the_app_folder(case: str) -> None:
    rendered = files(case)
    (config_path,) = [p for p in rendered if p.endswith("/kustomization.yaml")]
    folder = config_path.rsplit("/", 1)[0]
    listed = re.findall(r"^  - (\S+)$", rendered[config_path], flags=re.MULTILINE)
    siblings = sorted(
        p.rsplit("/", 1)[1] for p in rendered if p.startswith(folder + "/") and p != config_path
    )
    assert sorted(listed) == siblings
    # The Flux Kustomization lives outside the folder it applies.
    outside = [p for p in rendered if not p.startswith(folder + "/")]
    assert len(outside) == 1 and "kind: Kustomization" in rendered[outside[0]]
    assert "kustomize.toolkit.fluxcd.io/v1" in rendered[outside[0]]


def test_a_dot_in_the_branch_is_literal() -> None:
    pattern = tag_filter_pattern("v1.2")
    assert re.search(pattern, "v1.2-da156088-20261122040506")
    assert not re.search(pattern, "v1x2-da156088-20261122040506")


# --- who may open the app: forward-auth, the /_nakama/ Ingress, TLS ---------------------------
NGINX_AUTH = {
    "nginx.ingress.kubernetes.io/auth-url": "http://nakama.nakama.svc.cluster.local/gateway/verify",
    "nginx.ingress.kubernetes.io/auth-signin": (
        "https://nakama.example.com/gateway/sign-in?rd=$scheme://$host$escaped_request_uri"
    ),
    "nginx.ingress.kubernetes.io/auth-response-headers": "X-Forwarded-User,X-Forwarded-Email",
}
TRAEFIK_AUTH = {
    "traefik.ingress.kubernetes.io/router.middlewares": "nakama-apps-demo-auth@kubernetescrd"
}


def render_with(visibility: str = "private", **settings: Any) -> list[dict[str, Any]]:
    project = AppProject(name="demo", repo_url="https://g.example/demo.git", visibility=visibility)
    return render_manifests(
        project, FluxSettings(**settings), harbor=HarborSettings(), namespace=NAMESPACE
    )


def annotations(doc: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = doc["metadata"].get("annotations", {})
    return found


@pytest.mark.parametrize(
    ("controller", "visibility", "expected", "middleware"),
    [
        ("nginx", "private", NGINX_AUTH, False),
        ("nginx", "internal", NGINX_AUTH, False),
        ("nginx", "public", {}, False),
        ("traefik", "private", TRAEFIK_AUTH, True),
        ("traefik", "internal", TRAEFIK_AUTH, True),
        ("traefik", "public", {}, False),
        ("none", "private", {}, False),
        ("none", "public", {}, False),
    ],
)
def test_forward_auth_guards_private_and_internal_apps_only(
    controller: str, visibility: str, expected: dict[str, str], middleware: bool
) -> None:
    docs = render_with(visibility, ingress_controller=controller)
    assert annotations(by_kind(docs, "Ingress")) == expected
    assert any(d["kind"] == "Middleware" for d in docs) is middleware
    assert annotations(gateway_ingress(docs)) == {}  # the callback is never guarded


def test_the_traefik_middleware_forwards_to_verify_and_copies_who_it_is() -> None:
    docs = render_with("private", ingress_controller="traefik")
    middleware = by_kind(docs, "Middleware")
    assert middleware["apiVersion"] == "traefik.io/v1alpha1"
    assert middleware["metadata"]["name"] == "demo-auth"
    assert middleware["metadata"]["namespace"] == NAMESPACE
    assert middleware["spec"] == {
        "forwardAuth": {
            "address": "http://nakama.nakama.svc.cluster.local/gateway/verify",
            "authResponseHeaders": ["X-Forwarded-User", "X-Forwarded-Email"],
            "trustForwardHeader": False,
        }
    }
    ref = annotations(by_kind(docs, "Ingress"))["traefik.ingress.kubernetes.io/router.middlewares"]
    assert ref == f"{NAMESPACE}-{middleware['metadata']['name']}@kubernetescrd"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"nakama_internal_url": "http://nakama.platform.svc:8000/"},
            (
                "http://nakama.platform.svc:8000/gateway/verify",
                "https://nakama.example.com/gateway/sign-in?",
            ),
        ),
        (
            {"nakama_public_url": "https://login.corp.example/nakama/"},
            (
                "http://nakama.nakama.svc.cluster.local/gateway/verify",
                "https://login.corp.example/nakama/gateway/sign-in?",
            ),
        ),
    ],
)
def test_auth_urls_come_from_the_settings(
    settings: dict[str, str], expected: tuple[str, str]
) -> None:
    found = annotations(by_kind(render_with(**settings), "Ingress"))
    assert found["nginx.ingress.kubernetes.io/auth-url"] == expected[0]
    assert found["nginx.ingress.kubernetes.io/auth-signin"].startswith(expected[1])
    assert found["nginx.ingress.kubernetes.io/auth-signin"].endswith(
        "?rd=$scheme://$host$escaped_request_uri"
    )


@pytest.mark.parametrize(
    ("cert_issuer", "wildcard", "secret"),
    [
        (None, None, None),  # plain HTTP
        (None, "apps-wildcard-tls", "apps-wildcard-tls"),
        ("letsencrypt", None, "demo-tls"),
        ("letsencrypt", "apps-wildcard-tls", "demo-tls"),  # cert-manager wins
    ],
)
@pytest.mark.parametrize("visibility", ["private", "public"])
def test_tls_and_the_certificate_annotation_only_with_a_secret_or_an_issuer(
    cert_issuer: str | None, wildcard: str | None, secret: str | None, visibility: str
) -> None:
    project = AppProject(name="demo", repo_url="https://g.example/demo.git", visibility=visibility)
    docs = render_manifests(
        project,
        FluxSettings(cert_issuer=cert_issuer),
        harbor=HarborSettings(),
        namespace=NAMESPACE,
        layout=GitOpsLayout(tls_secret=wildcard),
    )
    tls = [{"hosts": ["demo.apps.example.com"], "secretName": secret}] if secret else None
    app, callback = by_kind(docs, "Ingress"), gateway_ingress(docs)
    assert app["spec"].get("tls") == tls
    assert callback["spec"].get("tls") == tls  # the same certificate for the whole host
    issuer = annotations(app).get("cert-manager.io/cluster-issuer")
    assert issuer == cert_issuer
    assert "cert-manager.io/cluster-issuer" not in annotations(callback)  # one Certificate


@pytest.mark.parametrize(
    ("internal_url", "host", "port"),
    [
        ("http://nakama.nakama.svc.cluster.local", "nakama.nakama.svc.cluster.local", 80),
        (
            "http://nakama.platform.svc.cluster.local:8000",
            "nakama.platform.svc.cluster.local",
            8000,
        ),
        ("https://nakama.platform.svc/", "nakama.platform.svc", 443),
    ],
)
def test_the_nakama_prefix_goes_to_the_externalname_service(
    internal_url: str, host: str, port: int
) -> None:
    for controller in ("nginx", "traefik", "none"):
        docs = render_with(
            "private", ingress_controller=controller, nakama_internal_url=internal_url
        )
        callback = gateway_ingress(docs)
        assert callback["metadata"]["name"] == "demo.nakama-gateway"
        assert callback["metadata"]["labels"]["app.kubernetes.io/name"] == "demo"  # pruned with it
        (rule,) = callback["spec"]["rules"]
        assert rule["host"] == "demo.apps.example.com"
        assert rule["http"]["paths"] == [
            {
                "path": "/_nakama/",
                "pathType": "Prefix",
                "backend": {"service": {"name": "nakama-gateway", "port": {"number": port}}},
            }
        ]
    service = render_gateway_service(
        FluxSettings(nakama_internal_url=internal_url), namespace=NAMESPACE
    )
    assert service["metadata"]["name"] == "nakama-gateway"
    assert service["metadata"]["namespace"] == NAMESPACE  # an Ingress reaches its own namespace
    assert service["spec"] == {
        "type": "ExternalName",
        "externalName": host,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }
    assert gateway_file("clusters/nakama/apps") == "clusters/nakama/apps/nakama-gateway.yaml"


@pytest.mark.parametrize("controller", ["nginx", "traefik", "none"])
def test_a_visibility_change_touches_only_the_gateway_paths(controller: str) -> None:
    settings = FluxSettings(ingress_controller=controller)
    rendered = {
        visibility: render_files(
            AppProject(name="demo", repo_url="https://g.example/d.git", visibility=visibility),
            settings,
            harbor=HarborSettings(),
            namespace=NAMESPACE,
        )
        for visibility in ("private", "internal", "public")
    }
    owned = set(gateway_paths("demo", settings))
    every = set().union(*rendered.values())
    changed = {p for p in every if len({files.get(p) for files in rendered.values()}) > 1}
    assert changed <= owned
    assert "apps/demo/deployment.yaml" not in owned
    assert all(p in every for p in owned if not p.endswith("/middleware.yaml"))
    if controller == "traefik":
        assert changed == {"apps/demo/ingress.yaml", "apps/demo/middleware.yaml"} | {
            "apps/demo/kustomization.yaml"
        }
        assert "apps/demo/middleware.yaml" not in rendered["public"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"nakama_internal_url": "nakama.nakama.svc:80"}, "nakama_internal_url: must be an http"),
        ({"nakama_internal_url": "http://10.0.0.7:8000"}, "must be a DNS name"),
        ({"nakama_public_url": "/gateway"}, "nakama_public_url: must be an http"),
    ],
)
def test_bad_gateway_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        render_with(**settings)
    with pytest.raises(InvalidInput, match=message.split(":")[0]):
        render_gateway_service(FluxSettings(**settings), namespace=NAMESPACE)
