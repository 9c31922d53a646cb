"""Verb-level RBAC in the Kubernetes fake, from the Roles in deploy/, and the cluster adapters
running within them.

The review of cluster mode found the fake authorised by namespace only (its probe
``kube_fake_token_without_secret_rights_created_secret  x``: a token whose Role has no Secret
rights created a Secret). The fake now reads deploy/kustomize/base/rbac.yaml and
deploy/reloader-pipeline/rbac.yaml, binds each ServiceAccount's token to the Roles its
RoleBindings name, and refuses the rest with the API server's Forbidden Status. So the static
comparison of client calls with the Role (tests/integration/test_deploy_manifests.py) is backed
by behaviour: the adapters run with the Role's token, and a Role missing a verb breaks them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr
from ruamel.yaml import YAML

from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from backend.cluster.runtime import KubernetesRuntime
from code_reloader.restart import Method, restart_app
from flux.manifests import GitOpsLayout
from nakama.clients.gitlab import GitLabClient
from nakama.clients.kubernetes import RetryPolicy
from nakama.errors import Unauthorized
from nakama.settings import FluxSettings, GitLabSettings, HarborSettings, Settings
from tests.fakes import gitlab_git
from tests.fakes.gitlab import TOKEN, GitLabFake
from tests.fakes.kube_rbac import DEPLOY_RBAC, Authorizer
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.support import serve

__all__ = ["kube_fake"]

NS = "nakama-apps"
BACKEND = 'User "system:serviceaccount:nakama:nakama"'
RELOADER = 'User "system:serviceaccount:nakama-apps:nakama-reloader-pipeline"'
NOW = datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC)
COMMIT = "c" * 40
FAST = RetryPolicy(attempts=1)


def rbac_documents() -> list[dict[str, Any]]:
    return [
        d
        for path in DEPLOY_RBAC
        for d in YAML(typ="safe", pure=True).load_all(path.read_text())
        if d
    ]


@pytest.fixture
def spoiled_fake(request: pytest.FixtureRequest) -> Iterator[KubeFake]:
    """A fake whose nakama Role lacks what ``request.param`` (group, resource, verb) names."""
    group, resource, verb = request.param
    docs = rbac_documents()
    for doc in docs:
        if doc["kind"] == "Role" and doc["metadata"]["name"] == "nakama":
            for rule in doc["rules"]:
                if rule["apiGroups"] == [group] and rule["resources"] == [resource]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    fake = KubeFake(authorizer=Authorizer.from_documents(docs))
    with serve(fake.app) as url:
        fake.url = url
        yield fake
        fake.close()


def status_of(exc: ApiException) -> dict[str, Any]:
    body = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body)
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def make_runtime(
    tmp_path: Path, gitlab: GitLabFake, client: GitLabClient, kube: KubeFake, token: str
) -> KubernetesRuntime:
    settings = Settings(
        mode="cluster",
        data_dir=tmp_path / "data",
        gitlab=GitLabSettings(url=gitlab.url, token=SecretStr(TOKEN), max_attempts=2),
        harbor=HarborSettings(url="https://harbor.test", password=SecretStr("harbor-pw-1")),
        flux=FluxSettings(app_domain="apps.test"),
    )
    layout = GitOpsLayout()
    gitops = GitOpsRepository(
        client,
        project_path="nakama/gitops",
        branch="main",
        author_name=layout.author_name,
        author_email=layout.author_email,
    )
    return KubernetesRuntime(
        gitops=gitops,
        kube=kube.api_client(token),
        forge=GitLabForge(client, hook_base_url="http://127.0.0.1:9"),
        gitlab=client,
        settings=settings,
    )


# --- the fake refuses -------------------------------------------------------------------------


def test_a_token_without_secret_rights_cannot_create_a_secret(kube_fake: KubeFake) -> None:
    """The review's probe, ``kube_fake_token_without_secret_rights_created_secret  x``: the
    reloader pipeline's Role (deployments get/patch, pods list/delete) has no Secret rights."""
    token = kube_fake.service_account_token(NS, "nakama-reloader-pipeline")
    core = CoreV1Api(kube_fake.api_client(token))
    body = V1Secret(metadata=V1ObjectMeta(name="x"), string_data={"k": "v"})
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_secret(NS, body)
    assert caught.value.status == 403
    assert status_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'secrets is forbidden: {RELOADER} cannot create resource "secrets" '
        f'in API group "" in the namespace "{NS}"',
        "reason": "Forbidden",
        "details": {"kind": "secrets"},
        "code": 403,
    }
    assert kube_fake.secret("x") is None
    # The backend's Role may create it.
    CoreV1Api(kube_fake.api_client()).create_namespaced_secret(NS, body)
    assert kube_fake.secret("x") == {"k": "v"}


def test_forbidden_names_the_object_the_group_and_the_subresource(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("demo")
    [pod] = kube_fake.pods("demo")
    pod_name = pod["metadata"]["name"]
    reloader = kube_fake.api_client(kube_fake.service_account_token(NS, "nakama-reloader-pipeline"))
    with pytest.raises(ApiException) as caught:
        CoreV1Api(reloader).read_namespaced_pod_log(pod_name, NS, container="app")
    status = status_of(caught.value)
    assert status["message"] == (
        f'pods "{pod_name}" is forbidden: {RELOADER} cannot get resource "pods/log" '
        f'in API group "" in the namespace "{NS}"'
    )
    assert status["details"] == {"kind": "pods", "name": pod_name}
    # The backend may list pods but not Secrets, nor replace a Deployment wholesale.
    backend = kube_fake.api_client()
    with pytest.raises(ApiException) as caught:
        CoreV1Api(backend).list_namespaced_secret(NS)
    assert status_of(caught.value)["message"] == (
        f'secrets is forbidden: {BACKEND} cannot list resource "secrets" '
        f'in API group "" in the namespace "{NS}"'
    )
    apps = AppsV1Api(backend)
    with pytest.raises(ApiException) as caught:
        apps.delete_namespaced_deployment("demo", NS)
    status = status_of(caught.value)
    assert status["message"] == (
        f'deployments.apps "demo" is forbidden: {BACKEND} cannot delete resource '
        f'"deployments" in API group "apps" in the namespace "{NS}"'
    )
    assert status["details"] == {"kind": "deployments", "group": "apps", "name": "demo"}
    assert kube_fake.deployment("demo")  # still there


def test_a_role_binding_grants_in_its_own_namespace_only(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("demo", namespace="default")
    with pytest.raises(ApiException) as caught:
        AppsV1Api(kube_fake.api_client()).read_namespaced_deployment("demo", "default")
    assert caught.value.status == 403
    assert status_of(caught.value)["message"].endswith('in the namespace "default"')
    # A ServiceAccount no binding names may do nothing at all.
    stranger = kube_fake.api_client(kube_fake.service_account_token(NS, "default"))
    with pytest.raises(ApiException) as caught:
        AppsV1Api(stranger).read_namespaced_deployment("demo", NS)
    assert caught.value.status == 403


# --- the adapters within their Roles ------------------------------------------------------------


def test_the_backend_adapters_stay_within_the_backend_role(
    tmp_path: Path, gitlab_fake: GitLabFake, gitlab_client: GitLabClient, kube_fake: KubeFake
) -> None:
    gitlab_fake.create_project("nakama/gitops", files={"README.md": b"the cluster\n"})
    app = gitlab_fake.create_project("nakama-apps/demo", files={"app.py": b"print(1)\n"})
    head = gitlab_git.branch_head(app.repo, "main")
    assert head is not None
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake, kube_fake.token)
    runtime.prepare("demo", commit=head)  # the git Secret: read, then create
    runtime.prepare("demo", commit=head)  # complete: read only
    kube_fake.add_deployment("demo", replicas=2)
    kube_fake.add_claim("demo-data")
    assert runtime.status("demo").state == "running"
    assert runtime.logs("demo", tail=10) == ""
    runtime.set_environment("demo", {"GREETING": "hello"})  # Secret replace/create, restart
    runtime.set_environment("demo", {"GREETING": "again"})
    methods: tuple[Method, ...] = ("patch", "delete-pods")
    for method in methods:
        restart_app(
            kube_fake.api_client(),
            namespace=NS,
            name="demo",
            commit=COMMIT,
            method=method,
            now=NOW,
        )
    runtime.remove("demo")  # the data claim and both Secrets
    assert kube_fake.refused == []
    assert kube_fake.secret("demo-env") is None and kube_fake.claim("demo-data") is None


def test_the_reloader_pipeline_restarts_within_its_role_and_can_do_nothing_else(
    tmp_path: Path, gitlab_fake: GitLabFake, gitlab_client: GitLabClient, kube_fake: KubeFake
) -> None:
    gitlab_fake.create_project("nakama/gitops", files={"README.md": b"the cluster\n"})
    kube_fake.add_deployment("demo", replicas=2)
    token = kube_fake.service_account_token(NS, "nakama-reloader-pipeline")
    methods: tuple[Method, ...] = ("patch", "delete-pods")
    for method in methods:
        restart_app(
            kube_fake.api_client(token),
            namespace=NS,
            name="demo",
            commit=COMMIT,
            method=method,
            now=NOW,
        )
    assert kube_fake.refused == []
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake, token)
    with pytest.raises(Unauthorized, match=r'cannot update resource "secrets"'):
        runtime.set_environment("demo", {"GREETING": "hello there"})
    with pytest.raises(Unauthorized, match=r'cannot get resource "pods/log"'):
        runtime.logs("demo", tail=5)
    with pytest.raises(Unauthorized, match=r'cannot delete resource "persistentvolumeclaims"'):
        runtime.remove("demo")


@pytest.mark.parametrize(
    ("spoiled_fake", "call", "refusal"),
    [
        (("apps", "deployments", "patch"), "restart", 'cannot patch resource "deployments"'),
        (("", "pods", "delete"), "delete-pods", 'cannot delete resource "pods"'),
        (("", "pods/log", "get"), "logs", 'cannot get resource "pods/log"'),
        (("", "secrets", "update"), "variables", 'cannot update resource "secrets"'),
        (("", "persistentvolumeclaims", "delete"), "remove", 'cannot delete resource "persis'),
    ],
    indirect=["spoiled_fake"],
)
def test_a_role_missing_a_verb_breaks_the_adapter_that_needs_it(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    spoiled_fake: KubeFake,
    call: str,
    refusal: str,
) -> None:
    gitlab_fake.create_project("nakama/gitops", files={"README.md": b"the cluster\n"})
    spoiled_fake.add_deployment("demo")
    spoiled_fake.add_claim("demo-data")
    spoiled_fake.add_secret("demo-env", {"OLD": "1"})
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, spoiled_fake, spoiled_fake.token)
    api = spoiled_fake.api_client()
    with pytest.raises(Unauthorized, match=refusal):
        if call in ("restart", "delete-pods"):
            method: Method = "patch" if call == "restart" else "delete-pods"
            restart_app(
                api,
                namespace=NS,
                name="demo",
                commit=None,
                method=method,
                now=NOW,
                retry=FAST,
            )
        elif call == "logs":
            runtime.logs("demo", tail=5)
        elif call == "variables":
            runtime.set_environment("demo", {"NEW": "2"})
        else:
            runtime.remove("demo")
    assert len(spoiled_fake.refused) == 1
