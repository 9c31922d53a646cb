"""Cluster mode's app variables: KubernetesRuntime.set_environment against the Kubernetes API fake
(driven by the real kubernetes client) writes the Secret ``<app>-env`` the rendered Deployment
reads, restarts the Deployment with the restartedAt patch, and remove deletes the Secret; the
variable service keeps secrets encrypted in the database and gives the app their values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr
from ruamel.yaml import YAML
from sqlalchemy import text

from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from backend.cluster.runtime import KubernetesRuntime
from backend.databases import DatabaseService
from backend.variables import VariableService
from code_reloader.restart import COMMIT_ANNOTATION, RESTARTED_AT
from flux.manifests import GitOpsLayout
from nakama.clients.gitlab import GitLabClient
from nakama.db.session import Database
from nakama.db.tables import Project
from nakama.errors import PermanentError
from nakama.secretbox import SecretBox, generate_key
from nakama.settings import AddonSettings, FluxSettings, GitLabSettings, HarborSettings, Settings
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.integration.test_app_databases import addon_server, connect, roles_and_databases

__all__ = ["addon_server", "kube_fake"]

NAME = "demo"
GITOPS = "nakama/gitops"
COMMIT = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
SECRET_VALUE = "sk-live-0123456789abcdef"


@pytest.fixture
def runtime(
    tmp_path: Path, gitlab_fake: GitLabFake, kube_fake: KubeFake
) -> Iterator[KubernetesRuntime]:
    gitlab_settings = GitLabSettings(
        url=gitlab_fake.url, token=SecretStr(TOKEN), trigger_token=SecretStr(TRIGGER_TOKEN)
    )
    gitlab = GitLabClient(gitlab_settings, sleep=lambda _s: None)
    settings = Settings(
        mode="cluster",
        data_dir=tmp_path / "data",
        gitlab=gitlab_settings,
        harbor=HarborSettings(url="https://harbor.test"),
        flux=FluxSettings(app_domain="apps.test"),
    )
    layout = GitOpsLayout()
    gitops = GitOpsRepository(
        gitlab,
        project_path=GITOPS,
        branch="main",
        author_name=layout.author_name,
        author_email=layout.author_email,
    )
    yield KubernetesRuntime(
        gitops=gitops,
        kube=kube_fake.api_client(),
        forge=GitLabForge(gitlab, hook_base_url="http://127.0.0.1:9"),
        gitlab=gitlab,
        settings=settings,
    )
    gitlab.close()


def template_annotations(kube: KubeFake) -> dict[str, str]:
    annotations: dict[str, str] = kube.deployment(NAME)["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


def test_set_environment_writes_the_secret_the_deployment_reads_and_restarts_it(
    runtime: KubernetesRuntime, kube_fake: KubeFake
) -> None:
    # The rendered Deployment reads the whole Secret <app>-env, which may not exist yet.
    deployment = YAML(typ="safe").load(
        runtime.manifests(NAME, commit=COMMIT)[f"apps/{NAME}/deployment.yaml"]
    )
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert app["envFrom"] == [{"secretRef": {"name": f"{NAME}-env", "optional": True}}]
    assert "envFrom" not in deployment["spec"]["template"]["spec"]["initContainers"][0]

    kube_fake.add_deployment(NAME, annotations={COMMIT_ANNOTATION: COMMIT})
    pods_before = {p["metadata"]["name"] for p in kube_fake.pods(NAME)}
    with structlog.testing.capture_logs() as logs:
        runtime.set_environment(NAME, {"API_URL": "https://api.example", "TOKEN": SECRET_VALUE})
    assert kube_fake.secret(f"{NAME}-env") == {
        "API_URL": "https://api.example",
        "TOKEN": SECRET_VALUE,
    }
    [created] = kube_fake.calls("POST", "/secrets")
    assert created.body["type"] == "Opaque"
    assert created.body["metadata"]["name"] == f"{NAME}-env"
    assert created.body["metadata"]["labels"]["app.kubernetes.io/name"] == NAME
    # Restarted the way a reload is: the restartedAt patch, the commit kept.
    [patch] = kube_fake.calls("PATCH", f"/deployments/{NAME}")
    assert patch.content_type == "application/strategic-merge-patch+json"
    first = template_annotations(kube_fake)
    assert first[COMMIT_ANNOTATION] == COMMIT and RESTARTED_AT in first
    assert {p["metadata"]["name"] for p in kube_fake.pods(NAME)}.isdisjoint(pods_before)
    assert any(e["event"] == "app restarted with new variables" for e in logs)
    assert SECRET_VALUE not in repr(logs)

    # A change replaces the whole Secret (a removed variable is gone) and restarts again.
    runtime.set_environment(NAME, {"TOKEN": SECRET_VALUE})
    assert kube_fake.secret(f"{NAME}-env") == {"TOKEN": SECRET_VALUE}
    assert len(kube_fake.calls("POST", "/secrets")) == 1
    second = template_annotations(kube_fake)
    assert second[RESTARTED_AT] != first[RESTARTED_AT]
    assert second[COMMIT_ANNOTATION] == COMMIT

    runtime.set_environment(NAME, {})
    assert kube_fake.secret(f"{NAME}-env") == {}


def test_variables_before_flux_applied_the_app_are_stored_without_a_restart(
    runtime: KubernetesRuntime, kube_fake: KubeFake
) -> None:
    runtime.set_environment(NAME, {"API_URL": "https://api.example"})
    assert kube_fake.secret(f"{NAME}-env") == {"API_URL": "https://api.example"}
    assert kube_fake.calls("PATCH") == []


def test_remove_deletes_the_variables_secret_and_is_idempotent(
    runtime: KubernetesRuntime, kube_fake: KubeFake, gitlab_fake: GitLabFake
) -> None:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    runtime.set_environment(NAME, {"TOKEN": SECRET_VALUE})
    kube_fake.add_secret(f"{NAME}-git", {"username": "u", "token": "t"})
    runtime.remove(NAME)
    assert kube_fake.secret(f"{NAME}-env") is None
    assert kube_fake.secret(f"{NAME}-git") is None
    runtime.remove(NAME)  # already gone: fine
    assert kube_fake.secret(f"{NAME}-env") is None


def test_a_refused_secret_is_an_error_without_the_values(
    runtime: KubernetesRuntime, kube_fake: KubeFake
) -> None:
    kube_fake.add_deployment(NAME)
    kube_fake.fail_next(422, method="PUT", path_contains=f"/secrets/{NAME}-env")
    with pytest.raises(PermanentError) as caught:
        runtime.set_environment(NAME, {"TOKEN": SECRET_VALUE})
    assert f"secret {kube_fake.namespace}/{NAME}-env" in str(caught.value)
    assert SECRET_VALUE not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert kube_fake.calls("PATCH") == []


def test_the_service_stores_secrets_encrypted_and_the_app_gets_them_plain(
    runtime: KubernetesRuntime, kube_fake: KubeFake, database_url: str
) -> None:
    """Through VariableService, on SQLite and PostgreSQL: the database holds ciphertext, the
    app's Secret the value, the listing a preview; a failed apply is redacted of the value."""
    db = Database(database_url)
    box = SecretBox([generate_key()], source="NAKAMA_SECRETS_KEY")
    db.migrate(secrets=box)
    try:
        with db.session() as s:
            s.add(Project(name=NAME, status="running", branch="main", hook_token="t"))
        service = VariableService(db, runtime, box)
        service.set(NAME, "API_URL", "https://api.example", secret=False)
        service.set(NAME, "TOKEN", SECRET_VALUE, secret=True)
        assert kube_fake.secret(f"{NAME}-env") == {
            "API_URL": "https://api.example",
            "TOKEN": SECRET_VALUE,
        }
        with db.engine.connect() as conn:
            raw = dict(conn.execute(text("SELECT key, value FROM project_variables")).all())
        assert raw["API_URL"] == "https://api.example"
        assert raw["TOKEN"].startswith("fernet:") and SECRET_VALUE not in repr(raw)
        environment = service.environment(NAME)
        assert environment == {"API_URL": "https://api.example", "TOKEN": SECRET_VALUE}
        assert service.get(NAME, "TOKEN").preview == "…" + SECRET_VALUE[-2:]

        kube_fake.add_deployment(NAME)
        kube_fake.fail_next(422, method="PUT", path_contains=f"/secrets/{NAME}-env")
        with pytest.raises(PermanentError) as caught:
            service.set(NAME, "OTHER", "x" * 20, secret=True)
        assert "saved, but not applied" in str(caught.value)
        assert SECRET_VALUE not in str(caught.value)
    finally:
        db.dispose()


def test_a_database_url_lands_in_the_apps_secret_with_the_host_the_cluster_reaches(
    runtime: KubernetesRuntime, kube_fake: KubeFake, database_url: str, addon_server: str
) -> None:
    """Issue 14: the same database service in cluster mode; the app's address names the
    server as the cluster reaches it (postgres_app_host), and the app restarts with it."""
    db = Database(database_url)
    box = SecretBox([generate_key()], source="NAKAMA_SECRETS_KEY")
    db.migrate(secrets=box)
    addons = AddonSettings(postgres_url=addon_server, postgres_app_host="pg.databases.svc:5433")
    try:
        with db.session() as s:
            s.add(Project(name=NAME, status="running", branch="main", hook_token="t"))
        kube_fake.add_deployment(NAME, annotations={COMMIT_ANNOTATION: COMMIT})
        service = DatabaseService(db, box, addons, VariableService(db, runtime, box))
        shown = service.create(NAME)
        assert (shown.host, shown.port) == ("pg.databases.svc", 5433)
        secret = kube_fake.secret(f"{NAME}-env")
        assert secret is not None
        url = secret["DATABASE_URL"]
        assert url.startswith(f"postgresql://nakama_{NAME}_1:")
        assert url.endswith(f"@pg.databases.svc:5433/nakama_{NAME}")
        assert RESTARTED_AT in template_annotations(kube_fake)
        # The same address, on the host this test reaches the server at, opens the database.
        port = addon_server.rsplit(":", 1)[1].split("/")[0]
        with connect(url.replace("pg.databases.svc:5433", f"127.0.0.1:{port}")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"nakama_{NAME}",)
        service.delete(NAME)
        assert "DATABASE_URL" not in (kube_fake.secret(f"{NAME}-env") or {})
        assert roles_and_databases(addon_server, NAME) == []
    finally:
        db.dispose()
