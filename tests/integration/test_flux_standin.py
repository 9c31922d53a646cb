"""The Flux stand-in (tests/fakes/flux_standin.py) between the GitLab fake and the Kubernetes fake,
driven by Nakama's own GitOps commits (KubernetesRuntime against the GitLab fake): it applies what
Nakama committed as kustomize-controller, keeps the reloader's annotations, prunes, follows a
GitLab push hook through its Receiver, pushes image automation commits, and runs each pod as a
kubelet would (image pulls, the init container's env and shell line, the probes)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import SecretStr
from ruamel.yaml import YAML

from backend.cluster.build_records import record_build
from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from backend.cluster.runtime import KubernetesRuntime
from code_reloader.restart import COMMIT_ANNOTATION, RESTARTED_AT, restart_app
from flux.manifests import GitOpsLayout
from nakama.clients.gitlab import GitLabClient
from nakama.errors import InvalidInput
from nakama.limits import effective_limits
from nakama.ports import BuildRef
from nakama.settings import FluxSettings, GitLabSettings, HarborSettings, LimitsSettings, Settings
from tests.fakes import gitlab_git
from tests.fakes.flux_standin import MANAGER, FluxStandIn
from tests.fakes.gitlab import TOKEN, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.support import serve

__all__ = ["kube_fake"]

NAME = "demo"
GITOPS = "nakama/gitops"
HARBOR = "harbor.test"
REPOSITORY = f"nakama-apps/{NAME}"
TAG = "main-0123abcd-20260821101530"
LATER = "main-4567ef01-20260821111530"
NOW = datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC)


class Registry:
    """The tags the stand-in's registry holds (the flow test uses the real registry); every
    tag has every dependency hash here."""

    def __init__(self) -> None:
        self.tags: set[str] = set()

    def find(self, _project: str, dep_hash: str) -> BuildRef | None:
        if not self.tags:
            return None
        return BuildRef(dep_hash=dep_hash, tag=max(self.tags), created_at=NOW)

    def exists(self, image: str) -> bool:
        return image.rpartition(":")[2] in self.tags and image.startswith(f"{HARBOR}/")

    def list(self, _repository: str) -> list[str]:
        return sorted(self.tags)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def streamlit_like() -> FastAPI:
    app = FastAPI()
    app.get("/_stcore/health")(lambda: PlainTextResponse("ok"))
    return app


def fastapi_like() -> FastAPI:
    """An app that answers / and nothing else (404), as a plain FastAPI or Flask app does."""
    app = FastAPI()
    app.get("/")(lambda: {"hello": "world"})
    return app


@pytest.fixture
def setup(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    registry: Registry,
) -> Iterator[tuple[KubernetesRuntime, FluxStandIn, str]]:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    app = gitlab_fake.create_project(
        f"nakama-apps/{NAME}", files={"app.py": b"import streamlit\n", "requirements.txt": b""}
    )
    head = gitlab_git.branch_head(app.repo, "main")
    assert head is not None
    settings = Settings(
        mode="cluster",
        data_dir=tmp_path / "data",
        gitlab=GitLabSettings(url=gitlab_fake.url, token=SecretStr(TOKEN), max_attempts=2),
        harbor=HarborSettings(url=f"https://{HARBOR}", password=SecretStr("harbor-pw-1")),
        flux=FluxSettings(app_domain="apps.test", gitops_project=GITOPS),
    )
    layout = GitOpsLayout()
    gitops = GitOpsRepository(
        gitlab_client,
        project_path=GITOPS,
        branch="main",
        author_name=layout.author_name,
        author_email=layout.author_email,
    )
    runtime = KubernetesRuntime(
        gitops=gitops,
        kube=kube_fake.api_client(),
        forge=GitLabForge(gitlab_client, hook_base_url="http://127.0.0.1:9"),
        gitlab=gitlab_client,
        settings=settings,
        registry=registry,
    )
    standin = FluxStandIn(
        gitlab=gitlab_fake,
        kube=kube_fake,
        gitops=GITOPS,
        registry_host=HARBOR,
        image_exists=registry.exists,
        list_tags=registry.list,
    )
    yield runtime, standin, head


def deployment_file(gitlab: GitLabFake, app: str = NAME) -> dict[str, Any]:
    project = gitlab.project(GITOPS)
    head = gitlab_git.branch_head(project.repo, "main")
    assert head is not None
    _mode, blob = gitlab_git.list_tree(project.repo, head)[f"apps/{app}/deployment.yaml"]
    doc: dict[str, Any] = YAML(typ="safe").load(gitlab_git.read_blob(project.repo, blob))
    return doc


# --- kustomize-controller --------------------------------------------------------------------


def test_applies_nakamas_commit_as_kustomize_controller_and_keeps_the_reloaders_fields(
    setup: tuple[KubernetesRuntime, FluxStandIn, str],
    kube_fake: KubeFake,
    registry: Registry,
) -> None:
    runtime, standin, head = setup
    runtime.prepare(NAME, commit=head)
    revision = standin.poll()
    assert revision == standin.head()
    # No image yet, so no workload (review D6): nothing can sit in ImagePullBackOff.
    assert kube_fake.get_object("Deployment", NAME) is None and standin.runs == []
    assert runtime.deploy_build(NAME, commit=head, dep_hash="h") == "no image"
    registry.tags.add(TAG)
    assert runtime.deploy_build(NAME, commit=head, dep_hash="h") == "committed"
    standin.poll()
    [pod] = standin.live_pods(NAME)
    assert (pod.image, pod.commit, pod.ready) == (f"{HARBOR}/{REPOSITORY}:{TAG}", head, True)
    for kind in (
        "Deployment",
        "Service",
        "NetworkPolicy",
        "ImageRepository",
        "ImagePolicy",
        "Ingress",
    ):
        found = kube_fake.get_object(kind, NAME)
        assert found is not None, kind
        assert kube_fake.managers(kind, NAME) == {MANAGER}
    assert kube_fake.claim(f"{NAME}-data") is not None
    # The reloader's patch, then another GitOps commit re-applied: its annotations stay.
    restart_app(
        kube_fake.api_client(),
        namespace=kube_fake.namespace,
        name=NAME,
        commit="d" * 40,
        method="patch",
        now=NOW,
    )
    runtime.set_visibility(NAME, "public")
    runtime.set_limits(NAME, replace(effective_limits(LimitsSettings()), memory_mib=700))
    standin.poll()
    deployment = kube_fake.deployment(NAME)
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template[COMMIT_ANNOTATION] == "d" * 40
    assert template[RESTARTED_AT] == "2026-08-21T10:15:30Z"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "700Mi"
    assert container["image"] == f"{HARBOR}/{REPOSITORY}:{TAG}"  # the limits kept the tag
    assert {r.commit for r in standin.live_pods(NAME)} == {"d" * 40}


def test_without_a_registry_the_placeholder_tag_is_applied_and_never_pulls(
    setup: tuple[KubernetesRuntime, FluxStandIn, str], kube_fake: KubeFake
) -> None:
    """What the stand-in shows of the old way (review D6): the workload committed at once with
    the placeholder tag, which no registry has."""
    runtime, standin, head = setup
    runtime._registry = None
    runtime.prepare(NAME, commit=head)
    standin.poll()
    [pod] = standin.live_pods(NAME)
    assert pod.image.endswith(":main-00000000-19700101000000")
    assert (pod.ready, pod.reason) == (False, "ImagePullBackOff")


def test_remove_prunes_everything_but_the_data_volume(
    setup: tuple[KubernetesRuntime, FluxStandIn, str], kube_fake: KubeFake
) -> None:
    runtime, standin, head = setup
    runtime.prepare(NAME, commit=head)
    standin.poll()
    assert kube_fake.get_object("Service", NAME) is not None
    runtime.remove(NAME)  # deletes the data claim itself; Flux must not have pruned it first
    standin.poll()
    for kind in ("Deployment", "Service", "ImagePolicy", "PersistentVolumeClaim"):
        assert kube_fake.get_object(kind, NAME) is None, kind
    assert kube_fake.pods(NAME) == []


# --- the kubelet ---------------------------------------------------------------------------------


def test_an_image_not_in_the_registry_is_imagepullbackoff_and_never_ready(
    kube_fake: KubeFake, standin_bare: FluxStandIn
) -> None:
    kube_fake.apply(deployment_doc(image=f"{HARBOR}/{REPOSITORY}:{TAG}"), manager=MANAGER)
    [pod] = standin_bare.pods_of(NAME)
    assert (pod.ready, pod.reason, pod.commit) == (False, "ImagePullBackOff", None)
    status = kube_fake.deployment(NAME)["status"]
    assert status["availableReplicas"] == 0
    assert [c["status"] for c in status["conditions"] if c["type"] == "Available"] == ["False"]


def test_the_init_containers_env_rules(kube_fake: KubeFake, standin_bare: FluxStandIn) -> None:
    """The downward-API annotation absent is "", so ``${NAKAMA_COMMIT:-$NAKAMA_INITIAL_COMMIT}``
    falls back; neither set makes sh's ``:?`` fail the init container."""
    kube_fake.add_secret(f"{NAME}-git", {"username": "u", "token": "t"})
    kube_fake.apply(deployment_doc(initial="a" * 40), manager=MANAGER)
    assert standin_bare.pods_of(NAME)[-1].commit == "a" * 40
    restart_app(
        kube_fake.api_client(),
        namespace=kube_fake.namespace,
        name=NAME,
        commit="b" * 40,
        method="patch",
        now=NOW,
    )
    assert standin_bare.pods_of(NAME)[-1].commit == "b" * 40
    kube_fake.delete_object("Deployment", NAME)
    kube_fake.apply(deployment_doc(initial=None), manager=MANAGER)
    last = standin_bare.pods_of(NAME)[-1]
    assert (last.ready, last.reason) == (False, "Init:Error")
    # Without the git Secret the kubelet cannot even make the container.
    kube_fake._objects.pop(("secrets", kube_fake.namespace, f"{NAME}-git"))
    kube_fake.delete_object("Deployment", NAME)
    kube_fake.apply(deployment_doc(initial="a" * 40), manager=MANAGER)
    assert standin_bare.pods_of(NAME)[-1].reason == "CreateContainerConfigError"


def test_probes_go_to_the_apps_server(kube_fake: KubeFake, standin_bare: FluxStandIn) -> None:
    kube_fake.add_secret(f"{NAME}-git", {"username": "u", "token": "t"})
    with serve(fastapi_like()) as plain, serve(streamlit_like()) as streamlit:
        standin_bare.app_servers[NAME] = streamlit
        kube_fake.apply(deployment_doc(initial="a" * 40), manager=MANAGER)
        assert standin_bare.pods_of(NAME)[-1].ready
        kube_fake.delete_object("Deployment", NAME)
        standin_bare.app_servers[NAME] = plain  # 404 on /_stcore/health
        kube_fake.apply(deployment_doc(initial="a" * 40), manager=MANAGER)
        assert standin_bare.pods_of(NAME)[-1].reason == "CrashLoopBackOff"
        kube_fake.delete_object("Deployment", NAME)
        kube_fake.apply(deployment_doc(initial="a" * 40, probe_path="/"), manager=MANAGER)
        assert standin_bare.pods_of(NAME)[-1].ready


# --- source-controller, the Receiver, image automation -----------------------------------


def test_a_gitlab_push_hook_through_the_receiver_applies_a_commit_at_once(
    setup: tuple[KubernetesRuntime, FluxStandIn, str],
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
) -> None:
    runtime, standin, head = setup
    runtime.prepare(NAME, commit=head)
    with standin.receiver() as url:
        project = gitlab_client.api.projects.get(GITOPS)
        project.hooks.create(
            {
                "url": url,
                "token": standin.receiver_token,
                "push_events": True,
                "push_events_branch_filter": "main",
                "enable_ssl_verification": False,
            }
        )
        latencies = []
        for visibility in ("public", "internal", "private", "public", "internal"):
            runtime.set_visibility(NAME, visibility)  # Nakama's own commit through the API
            committed = time.monotonic()
            revision = standin.head()
            assert revision is not None
            applied = standin.wait_applied(revision)  # no poll() call: the hook did it
            latencies.append(applied.at - committed)
        assert standin.receiver_calls and set(standin.receiver_calls) == {200}
        ingress = kube_fake.get_object("Ingress", NAME)
        assert ingress is not None
        # A hook with a wrong token is refused (400) and applies nothing.
        project.hooks.create({"url": url, "token": "wrong-token-0123", "push_events": True})
        runtime.set_visibility(NAME, "public")
        gitlab_fake.wait_for_deliveries()
        assert 400 in standin.receiver_calls
    print(f"GitOps commit -> applied: median {statistics.median(latencies) * 1000:.0f} ms")


def test_image_automation_commits_the_newest_tag_and_the_new_pods_run_it(
    setup: tuple[KubernetesRuntime, FluxStandIn, str],
    kube_fake: KubeFake,
    registry: Registry,
) -> None:
    runtime, standin, head = setup
    registry.tags.add(TAG)
    runtime.prepare(NAME, commit=head)
    runtime.deploy_build(NAME, commit=head, dep_hash="h")
    standin.poll()
    registry.tags.update({LATER, "latest", "other-0123abcd-20990101000000"})
    pushed = standin.automate_images()
    assert pushed is not None and standin.head() == pushed
    standin.poll()
    image = kube_fake.deployment(NAME)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{HARBOR}/{REPOSITORY}:{LATER}"
    assert standin.live_pods(NAME)[-1].image == image
    assert standin.automate_images() is None  # nothing new: no commit


def test_a_dependency_push_rolls_the_app_once_and_a_later_reload_keeps_its_code(
    setup: tuple[KubernetesRuntime, FluxStandIn, str],
    kube_fake: KubeFake,
    registry: Registry,
) -> None:
    """Review D10: a dependency push rolled the app twice (Nakama's restart on the commit, with
    the old packages, then the new tag). Now the build is recorded before it is triggered, the
    new tag is the one roll-out, and the pod syncs the built commit; a reload decided after the
    build was submitted keeps its commit when the build's image arrives."""
    runtime, standin, head = setup
    registry.tags.add(TAG)
    runtime.prepare(NAME, commit=head)
    assert runtime.deploy_build(NAME, commit=head, dep_hash="h") == "committed"
    standin.poll()
    [first] = standin.live_pods(NAME)
    assert first.commit == head
    kube = kube_fake.api_client()
    namespace = kube_fake.namespace

    def roll() -> list[str | None]:
        before = len(standin.pods_of(NAME))
        standin.automate_images()
        standin.poll()
        return [p.commit for p in standin.pods_of(NAME)[before:]]

    # The dependency push: pipeline 5 builds BUILT, recorded before its trigger.
    built = "4567ef01" + "b" * 32  # LATER's sha8
    record_build(kube, namespace=namespace, project=NAME, commit=built, pipeline_id=5)
    registry.tags.add(LATER)  # the CI job pushed the image
    assert runtime.deploy_build(NAME, commit=built, dep_hash="h2") == "image automation"
    assert roll() == [built]  # one pod: new image and new code together
    assert standin.live_pods(NAME)[0].image.endswith(LATER)

    # Pipeline 6 builds NEXT; a code-only push is reloaded as pipeline 7 before NEXT's image.
    nxt = "89abcdef" + "c" * 32
    record_build(kube, namespace=namespace, project=NAME, commit=nxt, pipeline_id=6)
    code = "d" * 40
    restart_app(
        kube, namespace=namespace, name=NAME, commit=code, method="patch", now=NOW, pipeline=7
    )
    assert [p.commit for p in standin.live_pods(NAME)] == [code]
    registry.tags.add("main-89abcdef-20260821121530")
    assert roll() == [code]  # the newer decision: the reload's commit, now on the new packages
    record = kube_fake.get_object("ConfigMap", f"{NAME}-builds")
    assert record is not None
    assert record["data"] == {built[:8]: f"{built} 5", nxt[:8]: f"{nxt} 6"}

    runtime.remove(NAME)  # the record goes with the app
    assert kube_fake.get_object("ConfigMap", f"{NAME}-builds") is None


def test_two_builds_recorded_at_once_both_stay(kube_fake: KubeFake) -> None:
    """The record is replaced with the resourceVersion read, so a concurrent writer's 409 makes
    the loser read again and merge instead of dropping the other build."""
    kube = kube_fake.api_client()
    commits = [f"{i:08x}" + "e" * 32 for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda c: record_build(
                    kube,
                    namespace=kube_fake.namespace,
                    project=NAME,
                    commit=c,
                    pipeline_id=int(c[:8], 16) + 1,
                ),
                commits,
            )
        )
    record = kube_fake.get_object("ConfigMap", f"{NAME}-builds")
    assert record is not None and set(record["data"]) == {c[:8] for c in commits}


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def standin_bare(gitlab_fake: GitLabFake, kube_fake: KubeFake, registry: Registry) -> FluxStandIn:
    """A stand-in only for its kubelet (objects applied by the test itself)."""
    gitlab_fake.create_project(GITOPS, files={"README.md": b"x\n"})
    return FluxStandIn(
        gitlab=gitlab_fake,
        kube=kube_fake,
        gitops=GITOPS,
        registry_host=HARBOR,
        image_exists=registry.exists,
    )


def deployment_doc(
    *,
    image: str = "docker.io/library/python:3.12",
    initial: str | None = "a" * 40,
    probe_path: str = "/_stcore/health",
) -> dict[str, Any]:
    """A Deployment shaped like flux.manifests' (its init container's line and env rules)."""
    from flux.manifests import _SYNC_SCRIPT

    env: list[dict[str, Any]] = [
        {"name": "NAKAMA_REPO", "value": "https://gitlab.test/nakama-apps/demo.git"},
        {
            "name": "NAKAMA_COMMIT",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMMIT_ANNOTATION}']"}
            },
        },
        {
            "name": "NAKAMA_GIT_USERNAME",
            "valueFrom": {"secretKeyRef": {"name": f"{NAME}-git", "key": "username"}},
        },
    ]
    if initial:
        env.append({"name": "NAKAMA_INITIAL_COMMIT", "value": initial})
    probe = {"httpGet": {"path": probe_path, "port": "http"}}
    labels = {"app.kubernetes.io/name": NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": "nakama-apps", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [
                        {
                            "name": "sync-code",
                            "image": "platform.test/nakama:1",
                            "command": ["/bin/sh", "-c", _SYNC_SCRIPT],
                            "env": env,
                        }
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "startupProbe": probe,
                            "readinessProbe": probe,
                        }
                    ],
                },
            },
        },
    }


@pytest.mark.parametrize(
    ("toml", "probe", "server"),
    [
        (None, {"httpGet": {"path": "/_stcore/health", "port": "http"}}, streamlit_like),
        ('run = "uvicorn main:app --port $PORT"\n', {"tcpSocket": {"port": "http"}}, fastapi_like),
        ('run = "python main.py"\nhealth_path = "/"\n', {"httpGet": {"path": "/", "port": "http"}},
         fastapi_like),
    ],
    ids=["streamlit", "own-run-no-path", "own-run-with-path"],
)  # fmt: skip
def test_nakama_toml_health_path_becomes_the_probe_and_a_fastapi_app_runs(
    setup: tuple[KubernetesRuntime, FluxStandIn, str],
    gitlab_fake: GitLabFake,
    registry: Registry,
    toml: str | None,
    probe: dict[str, Any],
    server: Any,
) -> None:
    """Review D5: every Deployment probed /_stcore/health, so a FastAPI app (404 there) never
    became ready. The probe now follows nakama.toml, read at the commit being deployed."""
    runtime, standin, _head = setup
    files = {"main.py": b"app = None\n", "requirements.txt": b""}
    if toml is not None:
        files["nakama.toml"] = toml.encode()
    app = gitlab_fake.create_project("nakama-apps/api", files=files)
    head = gitlab_git.branch_head(app.repo, "main")
    assert head is not None
    registry.tags.add(TAG)
    with serve(server()) as url:
        standin.app_servers["api"] = url
        runtime.prepare("api", commit=head)
        assert runtime.deploy_build("api", commit=head, dep_hash="h") == "committed"
        standin.poll()
        [pod] = standin.live_pods("api")
        assert (pod.ready, pod.reason) == (True, "Running")
    [container] = deployment_file(gitlab_fake, "api")["spec"]["template"]["spec"]["containers"]
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert {k: v for k, v in container[key].items() if k in ("httpGet", "tcpSocket")} == probe


def test_a_nakama_toml_that_does_not_parse_is_named(
    setup: tuple[KubernetesRuntime, FluxStandIn, str], gitlab_fake: GitLabFake
) -> None:
    runtime, _standin, _head = setup
    app = gitlab_fake.create_project("nakama-apps/api", files={"nakama.toml": b"health_path = 3\n"})
    head = gitlab_git.branch_head(app.repo, "main")
    assert head is not None
    with pytest.raises(InvalidInput, match=r"nakama\.toml: 'health_path' must be a string"):
        runtime.health_path("api", head)
