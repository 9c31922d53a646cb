"""Restarting an app's Deployment through the real ``kubernetes`` client against the API fake."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, V1ObjectMeta, V1Secret

from code_reloader.restart import (
    COMMIT_ANNOTATION,
    FIELD_MANAGER,
    RESTARTED_AT,
    STRATEGIC_MERGE,
    RestartResult,
    commit_patch,
    restart_app,
    restart_patch,
    rollout_status,
    wait_for_rollout,
)
from code_reloader.restart_cli import restart_main
from nakama.clients.kubernetes import RetryPolicy, api_client, kube_call
from nakama.errors import Conflict, NotFound, PermanentError, TemporaryError, Unauthorized
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.support import free_port

__all__ = ["kube_fake"]  # the fixture, until tests/conftest.py lists tests.fakes.kubernetes

OLD = "1111111111111111111111111111111111111111"
NEW = "2222222222222222222222222222222222222222"
NOW = datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def _template_annotations(fake: KubeFake, name: str) -> dict[str, str]:
    return dict(fake.deployment(name)["spec"]["template"]["metadata"].get("annotations") or {})


def _pod_names(fake: KubeFake, name: str) -> set[str]:
    return {pod["metadata"]["name"] for pod in fake.pods(name)}


def _restart(fake: KubeFake, name: str = "sales", **kwargs: Any) -> RestartResult:
    options: dict[str, Any] = {"commit": NEW, "method": "patch", "now": NOW, "retry": FAST}
    options.update(kwargs)
    return restart_app(fake.api_client(), namespace=fake.namespace, name=name, **options)


# --- the patch method -----------------------------------------------------------------------------


def test_patch_rolls_the_pods_onto_the_commit(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: OLD}, replicas=2)
    before = _pod_names(kube_fake, "sales")

    result = _restart(kube_fake)

    assert result.action == "patched"
    assert result.restarted_at == "2026-08-21T10:15:30Z"
    deployment = kube_fake.deployment("sales")
    assert result.generation == deployment["metadata"]["generation"] == 2
    assert _template_annotations(kube_fake, "sales") == {
        COMMIT_ANNOTATION: NEW,
        RESTARTED_AT: "2026-08-21T10:15:30Z",
    }
    pods = kube_fake.pods("sales")
    assert len(pods) == 2 and not before & _pod_names(kube_fake, "sales")
    assert all(_annotations(pod)[COMMIT_ANNOTATION] == NEW for pod in pods)
    [patch] = kube_fake.calls("PATCH", "/deployments/sales")
    assert patch.content_type == STRATEGIC_MERGE
    assert patch.query["fieldManager"] == FIELD_MANAGER
    assert patch.body == restart_patch(NEW, NOW)
    api = kube_fake.api_client()
    status = wait_for_rollout(api, namespace=kube_fake.namespace, name="sales", timeout_s=5)
    assert status.done


def test_a_second_restart_in_the_same_second_still_restarts(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    first = _restart(kube_fake, commit=None)
    second = _restart(kube_fake, commit=None)
    assert second.restarted_at == "2026-08-21T10:15:31Z" != first.restarted_at
    assert kube_fake.deployment("sales")["metadata"]["generation"] == 3


def test_wait_follows_a_slow_rollout_to_its_end(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: OLD})
    kube_fake.rollout_delay_s = 0.6
    before = _pod_names(kube_fake, "sales")
    _restart(kube_fake)
    assert not rollout_status(kube_fake.deployment("sales")).done
    assert _pod_names(kube_fake, "sales") == before

    started = time.monotonic()
    api = kube_fake.api_client()
    status = wait_for_rollout(
        api, namespace=kube_fake.namespace, name="sales", timeout_s=10, interval_s=0.05
    )

    assert status.done and time.monotonic() - started >= 0.4
    assert not before & _pod_names(kube_fake, "sales")


def test_a_rollout_still_going_at_the_timeout_is_a_temporary_error(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.rollout_delay_s = 30
    _restart(kube_fake)
    api = kube_fake.api_client()
    with pytest.raises(TemporaryError, match=r"not done after 0\.3 s"):
        wait_for_rollout(
            api, namespace=kube_fake.namespace, name="sales", timeout_s=0.3, interval_s=0.05
        )


def test_progress_deadline_exceeded_is_a_permanent_error(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.stall_next_rollout("sales")
    _restart(kube_fake)
    api = kube_fake.api_client()
    with pytest.raises(PermanentError, match="progress deadline"):
        wait_for_rollout(api, namespace=kube_fake.namespace, name="sales", timeout_s=5)


def test_a_paused_deployment_is_not_restarted(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales", paused=True)
    for method in ("patch", "delete-pods"):
        with pytest.raises(PermanentError, match="can't restart paused deployment"):
            _restart(kube_fake, method=method)
    assert kube_fake.calls("PATCH") == [] and kube_fake.calls("DELETE") == []


# --- the delete-pods method -----------------------------------------------------------------------


def test_delete_pods_with_a_new_commit_patches_only_the_commit(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: OLD}, replicas=2)
    before = _pod_names(kube_fake, "sales")

    result = _restart(kube_fake, method="delete-pods")

    assert result.action == "patched-commit" and result.restarted_at is None
    assert _template_annotations(kube_fake, "sales") == {COMMIT_ANNOTATION: NEW}
    [patch] = kube_fake.calls("PATCH")
    assert patch.body == commit_patch(NEW) and patch.content_type == STRATEGIC_MERGE
    assert kube_fake.calls("DELETE") == []  # the patch rolled the pods; no second restart
    assert not before & _pod_names(kube_fake, "sales")
    assert all(_annotations(p)[COMMIT_ANNOTATION] == NEW for p in kube_fake.pods("sales"))


@pytest.mark.parametrize("commit", [OLD, None])
def test_delete_pods_on_the_same_commit_deletes_the_pods(
    kube_fake: KubeFake, commit: str | None
) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: OLD}, replicas=3)
    kube_fake.add_deployment("other")
    before, others = _pod_names(kube_fake, "sales"), _pod_names(kube_fake, "other")

    result = _restart(kube_fake, method="delete-pods", commit=commit)

    assert result.action == "deleted-pods" and set(result.deleted_pods) == before
    assert result.generation == 1
    assert kube_fake.calls("PATCH") == []
    after = kube_fake.pods("sales")
    assert len(after) == 3 and not before & _pod_names(kube_fake, "sales")
    assert all(_annotations(p)[COMMIT_ANNOTATION] == OLD for p in after)
    assert _pod_names(kube_fake, "other") == others
    [listing] = kube_fake.calls("GET", "/pods")
    assert listing.query["labelSelector"] == "app.kubernetes.io/name=sales"


# --- errors ---------------------------------------------------------------------------------------


def test_an_unknown_deployment_is_not_found(kube_fake: KubeFake) -> None:
    with pytest.raises(NotFound, match=r'deployments\.apps "ghost" not found'):
        _restart(kube_fake, name="ghost")


def test_a_wrong_token_is_unauthorized_and_never_shown(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJub2JvZHkifQ.c2lnbmF0dXJl"
    api = kube_fake.api_client(token=secret)
    with pytest.raises(Unauthorized) as caught:
        restart_app(
            api, namespace=kube_fake.namespace, name="sales", commit=NEW, method="patch", now=NOW
        )
    assert "401" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__)):
        assert secret not in text and "eyJ" not in text
    assert len(kube_fake.calls("GET")) == 1  # 401 is not retried


def test_a_token_for_another_namespace_is_forbidden(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales", namespace="elsewhere")
    with pytest.raises(Unauthorized, match=r"403.*forbidden"):
        restart_app(
            kube_fake.api_client(),
            namespace="elsewhere",
            name="sales",
            commit=NEW,
            method="patch",
            now=NOW,
        )
    token = kube_fake.add_token({"elsewhere"})
    restart_app(
        kube_fake.api_client(token),
        namespace="elsewhere",
        name="sales",
        commit=NEW,
        method="patch",
        now=NOW,
    )
    assert kube_fake.deployment("sales", namespace="elsewhere")["metadata"]["generation"] == 2


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, None), (429, 0)])
def test_temporary_failures_are_retried(
    kube_fake: KubeFake, status: int, retry_after: int | None
) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.fail_next(status, times=2, retry_after=retry_after, method="GET")
    kube_fake.fail_next(status, times=2, retry_after=retry_after, method="PATCH")

    result = _restart(kube_fake)

    assert result.generation == 2
    assert len(kube_fake.calls("GET")) == 3 and len(kube_fake.calls("PATCH")) == 3


def test_failures_past_the_attempts_are_a_temporary_error(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.fail_next(500, times=10)
    with pytest.raises(TemporaryError, match="500"):
        _restart(kube_fake)
    assert len(kube_fake.calls("GET")) == FAST.attempts
    assert kube_fake.calls("PATCH") == []


def test_an_unreachable_server_is_a_temporary_error() -> None:
    port = free_port()
    with (
        api_client(host=f"http://127.0.0.1:{port}", token="t0ken") as api,
        pytest.raises(TemporaryError, match="unreachable") as caught,
    ):
        kube_call(
            AppsV1Api(api).read_namespaced_deployment,
            "sales",
            "nakama-apps",
            what="reading deployment",
            retry=FAST,
        )
    assert "t0ken" not in str(caught.value)


# --- the fake's other objects, through the same client --------------------------------------------


def test_secrets_round_trip_with_conflicts(kube_fake: KubeFake) -> None:
    with api_client(host=kube_fake.url, token=kube_fake.token) as api:
        core, ns = CoreV1Api(api), kube_fake.namespace
        body = V1Secret(metadata=V1ObjectMeta(name="hook"), string_data={"token": "abc"})
        kube_call(core.create_namespaced_secret, ns, body, what="creating", retry=FAST)
        with pytest.raises(Conflict, match="already exists"):
            kube_call(core.create_namespaced_secret, ns, body, what="creating", retry=FAST)
        stored = kube_call(core.read_namespaced_secret, "hook", ns, what="reading", retry=FAST)
        assert stored.data is not None and base64.b64decode(stored.data["token"]) == b"abc"
        stored.string_data = {"token": "xyz"}
        kube_call(core.replace_namespaced_secret, "hook", ns, stored, what="replacing")
        with pytest.raises(Conflict, match="modified"):  # stored's resourceVersion is stale now
            kube_call(core.replace_namespaced_secret, "hook", ns, stored, what="replacing")
        assert kube_fake.secret("hook") == {"token": "xyz"}
        kube_call(core.delete_namespaced_secret, "hook", ns, what="deleting", retry=FAST)
        with pytest.raises(NotFound):
            kube_call(core.read_namespaced_secret, "hook", ns, what="reading", retry=FAST)


def test_a_merge_patch_and_the_deployment_list(kube_fake: KubeFake) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.add_deployment("hr")
    apps = AppsV1Api(kube_fake.api_client())
    apps.patch_namespaced_deployment(
        "sales",
        kube_fake.namespace,
        {"metadata": {"annotations": {"note": "x"}}},
        _content_type="application/merge-patch+json",
    )
    assert kube_fake.deployment("sales")["metadata"]["generation"] == 1  # not the template
    listed = apps.list_namespaced_deployment(kube_fake.namespace)
    assert sorted(str(d.metadata and d.metadata.name) for d in listed.items) == ["hr", "sales"]


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def kubeconfig(kube_fake: KubeFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("NAKAMA_KUBERNETES__NAMESPACE", kube_fake.namespace)
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube_fake.url}"}}}}]
users: [{{name: reloader, user: {{token: "{kube_fake.token}"}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: reloader}}}}]
current-context: fake
"""
    )
    return path


def test_restart_main_restarts_and_waits(
    kube_fake: KubeFake, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: OLD})
    code = restart_main(["--project", "sales", "--commit", NEW, "--kubeconfig", str(kubeconfig)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "restarted deployment nakama-apps/sales" in out and "successfully rolled out" in out
    annotations = _template_annotations(kube_fake, "sales")
    assert annotations[COMMIT_ANNOTATION] == NEW
    restarted = datetime.fromisoformat(annotations[RESTARTED_AT])
    assert abs(restarted - datetime.now(UTC)) < timedelta(minutes=1)


def test_restart_main_delete_pods_without_waiting(kube_fake: KubeFake, kubeconfig: Path) -> None:
    kube_fake.add_deployment("sales", annotations={COMMIT_ANNOTATION: NEW})
    before = _pod_names(kube_fake, "sales")
    args = ["--project", "sales", "--commit", NEW, "--method", "delete-pods", "--no-wait"]
    assert restart_main([*args, "--kubeconfig", str(kubeconfig)]) == 0
    assert not before & _pod_names(kube_fake, "sales")
    assert kube_fake.calls("PATCH") == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--project", "ghost", "--commit", NEW], 1, "not found"),
        (["--project", "paused", "--commit", NEW], 1, "can't restart paused"),
        (["--project", "sales", "--commit", "main"], 2, "full lower-case hash"),
        (["--project", "Sales!", "--commit", NEW], 2, "invalid project name"),
        (["--project", "sales"], 2, "--commit"),
        (["--project", "sales", "--commit", NEW, "--method", "kill"], 2, "invalid choice"),
    ],
)
def test_restart_main_exit_codes(
    kube_fake: KubeFake,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    kube_fake.add_deployment("sales")
    kube_fake.add_deployment("paused", paused=True)
    assert restart_main([*args, "--kubeconfig", str(kubeconfig)]) == code
    err = capsys.readouterr().err
    assert message in err


def test_restart_main_with_a_wrong_token_shows_no_token(
    kube_fake: KubeFake, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube_fake.add_deployment("sales")
    kubeconfig.write_text(kubeconfig.read_text().replace(kube_fake.token, "wrong-s3cr3t"))
    assert (
        restart_main(["--project", "sales", "--commit", NEW, "--kubeconfig", str(kubeconfig)]) == 1
    )
    captured = capsys.readouterr()
    assert "401" in captured.err and "Unauthorized" in captured.err
    assert "wrong-s3cr3t" not in captured.err + captured.out
    assert captured.err.count("\n") == 1
