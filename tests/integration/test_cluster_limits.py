"""KubernetesRuntime's limits against the GitLab fake (real bare repositories, driven by
python-gitlab) and the Kubernetes fake: prepare renders the limits the injected callable tells,
set_limits rewrites the files that follow them in one commit (keeping the image tag Flux's
automation wrote, and the list of files the gateway owns), asking again commits nothing, and
remove deletes the data volume Flux does not prune."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from backend.cluster.runtime import KubernetesRuntime
from flux.manifests import config_resources
from nakama.clients.gitlab import GitLabClient
from nakama.limits import AppLimits, effective_limits
from nakama.settings import FluxSettings, LimitsSettings
from tests.fakes.gitlab import FakeProject, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.integration.test_cluster_adapters import make_runtime as make_cluster_runtime
from tests.integration.test_cluster_visibility import (
    CONFIG,
    DEPLOYMENT,
    FOLDER,
    GITOPS,
    MIDDLEWARE,
    NAME,
    all_valid,
    automation_bumps_the_tag,
    commits,
    files_at,
    gitops,
    head,
    subject,
)

__all__ = ["gitops", "head", "kube_fake"]  # fixtures

DEFAULTS = effective_limits(LimitsSettings())
HPA = f"{FOLDER}/horizontalpodautoscaler.yaml"
DATA = f"{FOLDER}/persistentvolumeclaim-data.yaml"
POLICY = f"{FOLDER}/networkpolicy.yaml"
BUMPED = "main-da156088-20261122040506"


def make_runtime(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    client: GitLabClient,
    kube: KubeFake,
    *,
    limits: AppLimits | None = None,
    **flux: Any,
) -> KubernetesRuntime:
    return make_cluster_runtime(
        tmp_path,
        gitlab_fake,
        client,
        kube.api_client(),
        flux=FluxSettings(app_domain="apps.test", **flux),
        limits=(lambda project: limits) if limits else None,
    )


def load(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load(text)
    return doc


def app_container(files: dict[str, str]) -> dict[str, Any]:
    pod = load(files[DEPLOYMENT])["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    return app  # type: ignore[no-any-return]


def every_listed_file_exists(files: dict[str, str]) -> bool:
    listed = config_resources(files[CONFIG])
    siblings = {p.rsplit("/", 1)[1] for p in files if p.startswith(f"{FOLDER}/")} - {
        "kustomization.yaml"
    }
    return sorted(listed) == sorted(siblings)


def test_prepare_renders_the_limits_the_callable_tells(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    limits = replace(DEFAULTS, memory_mib=2048, replicas=2, autoscale_max=4, disk_mib=4096)
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake, limits=limits)
    runtime.prepare(NAME, commit=head)
    files = files_at(gitops)
    assert "replicas" not in load(files[DEPLOYMENT])["spec"]
    assert load(files[HPA])["spec"]["maxReplicas"] == 4
    assert load(files[DATA])["spec"]["resources"]["requests"]["storage"] == "4Gi"
    assert app_container(files)["resources"]["limits"]["memory"] == "2Gi"
    assert every_listed_file_exists(files) and all_valid(files)


def test_set_limits_rewrites_the_deployment_and_keeps_its_tag_and_commit(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    prepared = files_at(gitops)
    assert load(prepared[DEPLOYMENT])["spec"]["replicas"] == 1
    assert HPA not in prepared
    automation_bumps_the_tag(gitlab_client, gitops)
    before = commits(gitops)

    runtime.set_limits(NAME, DEFAULTS)  # what is there already: no commit
    assert commits(gitops) == before

    bigger = replace(DEFAULTS, memory_mib=4096, cpu=2.0)
    runtime.set_limits(NAME, bigger)
    after = files_at(gitops)
    assert len(commits(gitops)) == len(before) + 1
    assert subject(gitops) == f"Nakama|nakama: set the limits of {NAME}"
    changed = {p for p in after if after[p] != prepared.get(p)}
    assert changed == {DEPLOYMENT}
    app = app_container(after)
    assert app["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert app["image"].endswith(f":{BUMPED}")  # Flux's tag, not a placeholder
    assert head in after[DEPLOYMENT]  # the commit the app runs until its first reload
    assert '# {"$imagepolicy": "nakama-apps:demo"}' in after[DEPLOYMENT]
    assert all_valid(after)

    runtime.set_limits(NAME, bigger)  # again: nothing to do
    assert len(commits(gitops)) == len(before) + 1


def test_an_autoscaler_comes_and_goes_with_the_list_of_files(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(
        tmp_path, gitlab_fake, gitlab_client, kube_fake, ingress_controller="traefik"
    )
    runtime.prepare(NAME, commit=head)
    runtime.set_visibility(NAME, "public")  # Traefik: the Middleware goes
    public = files_at(gitops)
    assert MIDDLEWARE not in public

    runtime.set_limits(NAME, replace(DEFAULTS, replicas=2, autoscale_max=6))
    scaled = files_at(gitops)
    assert load(scaled[HPA])["spec"]["minReplicas"] == 2
    assert "replicas" not in load(scaled[DEPLOYMENT])["spec"]
    listed = config_resources(scaled[CONFIG])
    assert listed == [*config_resources(public[CONFIG]), "horizontalpodautoscaler.yaml"]
    assert "middleware.yaml" not in listed  # the gateway's part of the list is left as it is
    assert every_listed_file_exists(scaled) and all_valid(scaled)
    # Both volumes are ReadWriteOnce: the pods are kept on one node.
    assert "affinity" in load(scaled[DEPLOYMENT])["spec"]["template"]["spec"]

    runtime.set_limits(NAME, DEFAULTS)
    back = files_at(gitops)
    assert HPA not in back
    assert back == public  # the very files it had
    assert every_listed_file_exists(back)


def test_the_data_volume_grows_but_never_shrinks(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)

    def size() -> str:
        return str(load(files_at(gitops)[DATA])["spec"]["resources"]["requests"]["storage"])

    assert size() == "2Gi"
    runtime.set_limits(NAME, replace(DEFAULTS, disk_mib=8192))
    assert size() == "8Gi"
    before = commits(gitops)
    runtime.set_limits(NAME, replace(DEFAULTS, disk_mib=8192 - 1024))
    assert size() == "8Gi"  # Kubernetes refuses a smaller claim: left as it is
    assert commits(gitops) == before  # and nothing else changed
    assert all_valid(files_at(gitops))


def test_an_app_from_an_older_nakama_gets_its_missing_files(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    complete = files_at(gitops)
    # What an app made before the data volume and the NetworkPolicy looked like.
    new_files = ("networkpolicy.yaml", "persistentvolumeclaim-data.yaml")
    old_list = [n for n in config_resources(complete[CONFIG]) if n not in new_files]
    old_config = "".join(
        line
        for line in complete[CONFIG].splitlines(keepends=True)
        if line[4:].strip() not in new_files
    )
    assert config_resources(old_config) == old_list
    actions = [
        {"action": "delete", "file_path": DATA},
        {"action": "delete", "file_path": POLICY},
        {
            "action": "update",
            "file_path": CONFIG,
            "content": base64.b64encode(old_config.encode()).decode(),
            "encoding": "base64",
        },
    ]
    handle = gitlab_client.api.projects.get(GITOPS, lazy=True)
    handle.commits.create({"branch": "main", "commit_message": "an old app", "actions": actions})
    assert DATA not in files_at(gitops)

    runtime.set_limits(NAME, DEFAULTS)
    upgraded = files_at(gitops)
    assert upgraded[DATA] == complete[DATA] and upgraded[POLICY] == complete[POLICY]
    assert every_listed_file_exists(upgraded) and all_valid(upgraded)


def test_remove_deletes_the_data_volume_and_nothing_else(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    kube_fake.add_claim(f"{NAME}-data", size="2Gi")  # as Flux applied it
    kube_fake.add_claim("other-data")
    runtime.remove(NAME)
    assert kube_fake.claim(f"{NAME}-data") is None
    assert kube_fake.claim("other-data") is not None
    assert files_at(gitops) == {"README.md": "the cluster\n"}
    (delete,) = kube_fake.calls("DELETE", "/persistentvolumeclaims/")
    assert delete.path == f"/api/v1/namespaces/nakama-apps/persistentvolumeclaims/{NAME}-data"
    runtime.remove(NAME)  # gone already: fine
    assert kube_fake.claim("other-data") is not None


def test_an_app_without_manifests_is_left_alone_and_usage_is_unknown(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    before = commits(gitops)
    runtime.set_limits(NAME, replace(DEFAULTS, replicas=3))
    assert commits(gitops) == before
    assert runtime.data_usage(NAME) is None


def test_a_limits_commit_refused_once_is_planned_again(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    before = commits(gitops)
    posted = len(gitlab_fake.requests_to("POST", "/repository/commits"))
    gitlab_fake.fail_next(400, method="POST", path="/repository/commits")
    runtime.set_limits(NAME, replace(DEFAULTS, replicas=2))
    assert len(gitlab_fake.requests_to("POST", "/repository/commits")) == posted + 2
    assert len(commits(gitops)) == len(before) + 1
    assert load(files_at(gitops)[DEPLOYMENT])["spec"]["replicas"] == 2


@pytest.mark.parametrize("limits", [None, replace(DEFAULTS, replicas=2, autoscale_max=3)])
def test_set_visibility_renders_the_same_limits_as_prepare(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
    limits: AppLimits | None,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake, limits=limits)
    runtime.prepare(NAME, commit=head)
    runtime.set_visibility(NAME, "public")  # its kustomization.yaml lists the HPA iff there
    files = files_at(gitops)
    assert every_listed_file_exists(files) and all_valid(files)
    assert (HPA in files) is (limits is not None)
