"""A stateful fake of the Kubernetes API (Deployments, Pods, Secrets, PersistentVolumeClaims) on
loopback HTTP.

No API server can run on these machines (DESIGN.md), yet the code under test must be driven by the
real ``kubernetes`` client: its URL layout, content types, auth header and error bodies. So this is
a small in-memory API server, not a mock. It keeps objects as the JSON the API would send, plays
the Deployment controller (a template change bumps ``generation`` and, at once or after a delay,
replaces the pods; a deleted pod is recreated by its "ReplicaSet"), authorises every request
with verb-level RBAC read from the Roles and RoleBindings in deploy/ (:mod:`tests.fakes.kube_rbac`:
a bearer token is a ServiceAccount's, and what its bound Roles do not grant is a 403 ``Forbidden``
Status), answers errors with ``Status`` bodies, and can inject failures.

The default token (``kube_fake.token``, the ``kubeconfig`` fixture's) is the backend's
ServiceAccount ``nakama/nakama``, so everything the backend does in tests is checked against the
Role an operator applies; :meth:`KubeFake.service_account_token` gives other accounts' tokens.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from kubernetes.client import ApiClient, Configuration

from tests.fakes.kube_rbac import (
    Attributes,
    Authorizer,
    Rule,
    request_attributes,
    service_account_user,
)
from tests.support import serve

NAME_LABEL = "app.kubernetes.io/name"
_KINDS = {
    "deployments": ("apps", "Deployment"),
    "pods": ("", "Pod"),
    "secrets": ("", "Secret"),
    "persistentvolumeclaims": ("", "PersistentVolumeClaim"),
    "configmaps": ("", "ConfigMap"),
}
Json = dict[str, Any]
Outcome = Literal["complete", "deadline-exceeded"]


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it, for assertions on what the client sent."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: int | None
    method: str | None
    path_contains: str | None


@dataclass
class _Rollout:
    due: float
    outcome: Outcome


class KubeError(Exception):
    """Answered as a Kubernetes ``Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.code, self.reason, self.message, self.headers = code, reason, message, headers or {}
        self.details = details


def _merge(target: Any, patch: Any, *, strategic: bool) -> Any:
    """RFC 7386 merge; ``strategic`` also merges lists of named objects by ``name`` (containers,
    env, volumes), which is the part of strategic merge that pod templates need."""
    named = isinstance(patch, list) and isinstance(target, list)
    if strategic and named and all(isinstance(x, dict) and "name" in x for x in patch + target):
        merged = {x["name"]: copy.deepcopy(x) for x in target}
        for item in patch:
            merged[item["name"]] = _merge(merged.get(item["name"], {}), item, strategic=True)
        return list(merged.values())
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value, strategic=strategic)
    return result


def plural(kind: str) -> str:
    """The resource name of a kind, as the API's paths spell it (``NetworkPolicy`` ->
    ``networkpolicies``); already plural names are kept."""
    lower = kind.lower()
    if lower.endswith("s") and lower not in ("ingress",):
        return lower
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("ss") else "s")


def _drop_unapplied(live: Any, previous: Any, applied: Any) -> None:
    """Remove from ``live`` the mapping keys ``previous`` set and ``applied`` no longer sets
    (lists are replaced whole by the merge, so only mappings need this)."""
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return
    applied = applied if isinstance(applied, dict) else {}
    for key, value in previous.items():
        if key not in applied:
            live.pop(key, None)
        elif isinstance(value, dict):
            _drop_unapplied(live.get(key), value, applied[key])


def _status_response(exc: KubeError) -> JSONResponse:
    body: Json = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message,
        "reason": exc.reason,
        "code": exc.code,
    }
    if exc.details is not None:
        body["details"] = exc.details
    return JSONResponse(body, status_code=exc.code, headers=exc.headers)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.strip() not in labels:  # "key" alone: the label exists
            return False
    return True


class KubeFake:
    """The fake's state and its FastAPI app; see the ``kube_fake`` fixture."""

    def __init__(
        self, *, namespace: str = "nakama-apps", authorizer: Authorizer | None = None
    ) -> None:
        self.namespace = namespace
        self.authorizer = authorizer or Authorizer.from_files()
        self.url = ""  # set once served
        self.rollout_delay_s = 0.0  # seconds from a template change to the pods being replaced
        self.requests: list[Recorded] = []
        self.refused: list[Attributes] = []  # every request RBAC refused, for assertions
        # (namespace, deployment, pod) -> the pod's status; None: every pod runs and is ready
        self.pod_status: Callable[[str, str, Json], Json] | None = None
        # (kind plural, namespace, name) -> {field manager: the config it last applied}
        self._applied: dict[tuple[str, str, str], dict[str, Json]] = {}
        # (namespace, deployment, container) -> the log its pods print
        self.logs: dict[tuple[str, str, str], str] = {}
        self._tokens: dict[str, str] = {}  # bearer token -> user name
        self.token = self.service_account_token("nakama", "nakama")
        self._objects: dict[tuple[str, str, str], Json] = {}  # (kind, namespace, name) -> JSON
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._next_outcome: dict[tuple[str, str], Outcome] = {}
        self._failures: list[_Failure] = []
        self._clients: list[ApiClient] = []
        self._version = 0
        self._lock = threading.RLock()
        self.app = self._build_app()

    # --- set-up and inspection helpers for tests ---------------------------------------------

    def service_account_token(self, namespace: str, name: str) -> str:
        """A new token of ServiceAccount ``namespace/name`` (as its token Secret would hold): it
        may do what the Roles bound to that account grant, nothing else."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = service_account_user(namespace, name)
        return token

    def add_token(self, namespaces: set[str]) -> str:
        """A new token that may do anything in ``namespaces`` only (a namespace admin)."""
        token = secrets.token_urlsafe(24)
        user = f"admin-{token[:8]}"
        self._tokens[token] = user
        for namespace in namespaces:
            name = f"admin-{user}"
            self.authorizer.roles[(namespace, name)] = [
                Rule(frozenset({"*"}), frozenset({"*"}), frozenset({"*"}))
            ]
            self.authorizer.bindings.append((namespace, "Role", name, (user,)))
        return token

    def api_client(self, token: str | None = None) -> ApiClient:
        """A real client pointed at the fake; closed when the fixture ends."""
        config = Configuration(host=self.url)
        config.api_key = {"authorization": f"Bearer {token or self.token}"}
        client = ApiClient(config)
        self._clients.append(client)
        return client

    def add_deployment(
        self,
        name: str,
        *,
        annotations: dict[str, str] | None = None,
        replicas: int = 1,
        paused: bool = False,
        namespace: str | None = None,
    ) -> Json:
        """A rolled-out Deployment with ``replicas`` running pods, labelled like Nakama's."""
        labels = {NAME_LABEL: name}
        template = {
            "metadata": {"labels": labels, "annotations": dict(annotations or {})},
            "spec": {"containers": [{"name": "app", "image": f"registry.example/{name}:1"}]},
        }
        spec = {
            "replicas": replicas,
            "paused": paused,
            "selector": {"matchLabels": labels},
            "template": template,
            "progressDeadlineSeconds": 600,
        }
        with self._lock:
            dep = self._store(
                "deployments",
                namespace or self.namespace,
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "labels": labels, "generation": 1},
                    "spec": spec,
                    "status": {},
                },
            )
            self._finish_rollout(dep, "complete")
            return copy.deepcopy(dep)

    def add_secret(self, name: str, data: dict[str, str], *, namespace: str | None = None) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        with self._lock:
            self._store(
                "secrets",
                namespace or self.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": name},
                    "data": encoded,
                },
            )

    def add_claim(self, name: str, *, size: str = "1Gi", namespace: str | None = None) -> None:
        """A bound PersistentVolumeClaim, as Flux would have applied it."""
        with self._lock:
            self._store(
                "persistentvolumeclaims",
                namespace or self.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "labels": {NAME_LABEL: name.rsplit("-", 1)[0]}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": size}},
                    },
                    "status": {"phase": "Bound"},
                },
            )

    def claim(self, name: str, *, namespace: str | None = None) -> Json | None:
        """The PersistentVolumeClaim ``name``, or None."""
        with self._lock:
            found = self._objects.get(("persistentvolumeclaims", namespace or self.namespace, name))
            return copy.deepcopy(found) if found is not None else None

    # --- server-side apply, for the Flux stand-in ---------------------------------------------

    def apply(self, obj: Json, *, manager: str) -> Json:
        """Server-side apply ``obj`` as field manager ``manager`` (with force, as Flux's
        kustomize-controller applies): the fields it sets are set, the fields it set last time
        and no longer sets are removed, and fields other managers set stay (the restart
        annotations of ``nakama-reloader``). A Deployment whose pod template changes rolls out
        (unless paused), as any update's would. Returns the stored object."""
        kind = plural(obj["kind"])
        meta = obj["metadata"]
        ns = meta.get("namespace") or self.namespace
        key = (kind, ns, meta["name"])
        with self._lock:
            self._tick()
            live = self._objects.get(key)
            previous = self._applied.get(key, {}).get(manager)
            merged = _merge(copy.deepcopy(live) if live else {}, obj, strategic=True)
            if previous is not None:
                _drop_unapplied(merged, previous, obj)
            self._applied.setdefault(key, {})[manager] = copy.deepcopy(obj)
            if live is None:
                merged["metadata"]["generation"] = 1
                merged.setdefault("status", {})
                stored = self._store(kind, ns, merged)
                if kind == "deployments":
                    self._start_rollout(stored)
                return copy.deepcopy(stored)
            if merged.get("spec") != live.get("spec"):
                merged["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
            stored = self._store(kind, ns, merged)
            if kind == "deployments" and merged["spec"]["template"] != live["spec"]["template"]:
                if not merged["spec"].get("paused"):
                    self._start_rollout(stored)
            elif kind == "deployments" and merged.get("spec") != live.get("spec"):
                stored["status"]["observedGeneration"] = stored["metadata"]["generation"]
            return copy.deepcopy(stored)

    def delete_object(self, kind: str, name: str, *, namespace: str | None = None) -> bool:
        """Delete any object (Flux's prune); a Deployment's pods go with it."""
        ns = namespace or self.namespace
        with self._lock:
            gone = self._objects.pop((plural(kind), ns, name), None)
            self._applied.pop((plural(kind), ns, name), None)
            if plural(kind) == "deployments":
                for pod in self._select("pods", ns, f"{NAME_LABEL}={name}"):
                    del self._objects[("pods", ns, pod["metadata"]["name"])]
                self._rollouts.pop((ns, name), None)
            return gone is not None

    def get_object(self, kind: str, name: str, *, namespace: str | None = None) -> Json | None:
        with self._lock:
            self._tick()
            found = self._objects.get((plural(kind), namespace or self.namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def managers(self, kind: str, name: str, *, namespace: str | None = None) -> set[str]:
        """The field managers that applied ``kind/name`` (server-side apply only)."""
        return set(self._applied.get((plural(kind), namespace or self.namespace, name), {}))

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (after the auth check)."""
        self._failures.append(_Failure(status, times, retry_after, method, path_contains))

    def stall_next_rollout(self, name: str, *, namespace: str | None = None) -> None:
        """The next rollout of ``name`` ends in ``ProgressDeadlineExceeded`` instead."""
        self._next_outcome[(namespace or self.namespace, name)] = "deadline-exceeded"

    def deployment(self, name: str, *, namespace: str | None = None) -> Json:
        with self._lock:
            self._tick()
            return copy.deepcopy(self._objects[("deployments", namespace or self.namespace, name)])

    def pods(self, name: str, *, namespace: str | None = None) -> list[Json]:
        """The pods of Deployment ``name``, oldest first."""
        with self._lock:
            self._tick()
            return copy.deepcopy(
                self._select("pods", namespace or self.namespace, f"{NAME_LABEL}={name}")
            )

    def secret(self, name: str, *, namespace: str | None = None) -> dict[str, str] | None:
        """The decoded data of a Secret, or None."""
        obj = self._objects.get(("secrets", namespace or self.namespace, name))
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}

    def calls(self, method: str, path_contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    def close(self) -> None:
        for client in self._clients:
            client.close()  # type: ignore[no-untyped-call]

    # --- the "controllers" --------------------------------------------------------------------

    def _store(self, kind: str, namespace: str, obj: Json) -> Json:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=namespace, resourceVersion=str(self._version))
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._objects[(kind, namespace, meta["name"])] = obj
        return obj

    def _select(self, kind: str, namespace: str, selector: str | None) -> list[Json]:
        return [
            obj
            for (k, ns, _), obj in self._objects.items()
            if k == kind
            and ns == namespace
            and _matches(obj["metadata"].get("labels") or {}, selector)
        ]

    def _start_rollout(self, dep: Json) -> None:
        key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
        outcome = self._next_outcome.pop(key, "complete")
        self._rollouts[key] = _Rollout(time.monotonic() + self.rollout_delay_s, outcome)
        self._tick()

    def _tick(self) -> None:
        """Let due rollouts finish; called at every request, so no background thread is needed."""
        for key, rollout in list(self._rollouts.items()):
            if rollout.due <= time.monotonic():
                del self._rollouts[key]
                dep = self._objects.get(("deployments", *key))
                if dep is not None:
                    self._finish_rollout(dep, rollout.outcome)

    def _finish_rollout(self, dep: Json, outcome: Outcome) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        replicas = spec.get("replicas", 1)
        if outcome == "deadline-exceeded":
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{meta["name"]}" has timed out progressing.',
            }
            dep["status"].update(
                observedGeneration=meta["generation"],
                replicas=replicas + 1,
                updatedReplicas=1,
                availableReplicas=replicas,
                conditions=[progressing],
            )
            return
        for pod in self._select("pods", meta["namespace"], f"{NAME_LABEL}={meta['name']}"):
            del self._objects[("pods", meta["namespace"], pod["metadata"]["name"])]
        ready = sum(
            self._new_pod(meta["namespace"], meta["name"], spec["template"])
            for _ in range(replicas)
        )
        self._set_deployment_status(dep, ready=ready)

    def _set_deployment_status(self, dep: Json, *, ready: int) -> None:
        """The status the Deployment controller reports once its new pods exist, ``ready`` of
        them ready (a pod that cannot pull its image or fails its probes is not)."""
        meta, replicas = dep["metadata"], dep["spec"].get("replicas", 1)
        if ready >= replicas:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{meta["name"]}" has successfully progressed.',
            }
            available = {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
            }
        else:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": f'ReplicaSet "{meta["name"]}" is progressing.',
            }
            available = {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            }
        dep["status"] = {
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas - ready,
            "conditions": [available, progressing],
        }

    def _new_pod(self, namespace: str, deployment: str, template: Json) -> bool:
        """A pod of ``template``; whether it is ready. Running and ready unless
        :attr:`pod_status` (e.g. the Flux stand-in's kubelet) says otherwise."""
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        rs_name = f"{deployment}-{digest}"
        meta = copy.deepcopy(template.get("metadata") or {})
        meta["labels"] = {**meta.get("labels", {}), "pod-template-hash": digest}
        meta.update(
            name=f"{rs_name}-{secrets.token_hex(3)[:5]}",
            ownerReferences=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs_name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, rs_name)),
                    "controller": True,
                }
            ],
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        if self.pod_status is not None:
            pod["status"] = self.pod_status(namespace, deployment, pod)
        self._store("pods", namespace, pod)
        ready = [c for c in pod["status"].get("conditions") or [] if c.get("type") == "Ready"]
        return bool(ready) and ready[0].get("status") == "True"

    # --- the HTTP API -----------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(dependencies=[Depends(self._gate)])
        app.middleware("http")(self._authorise)

        @app.exception_handler(KubeError)
        async def _status(_: Request, exc: KubeError) -> JSONResponse:
            return _status_response(exc)

        deps = "/apis/apps/v1/namespaces/{ns}/deployments"
        app.get(deps)(lambda ns, labelSelector=None: self._list("deployments", ns, labelSelector))
        app.get(deps + "/{name}")(lambda ns, name: self._get("deployments", ns, name))
        app.patch(deps + "/{name}")(self._patch_deployment)
        pods = "/api/v1/namespaces/{ns}/pods"
        app.get(pods)(lambda ns, labelSelector=None: self._list("pods", ns, labelSelector))
        app.get(pods + "/{name}")(lambda ns, name: self._get("pods", ns, name))
        app.delete(pods + "/{name}")(self._delete_pod)
        app.get(pods + "/{name}/log")(self._pod_log)
        sec = "/api/v1/namespaces/{ns}/secrets"
        app.get(sec)(lambda ns, labelSelector=None: self._list("secrets", ns, labelSelector))
        app.get(sec + "/{name}")(lambda ns, name: self._get("secrets", ns, name))
        app.post(sec, status_code=201)(self._create_secret)
        app.put(sec + "/{name}")(self._replace_secret)
        app.delete(sec + "/{name}")(self._delete_secret)
        cms = "/api/v1/namespaces/{ns}/configmaps"
        app.get(cms + "/{name}")(lambda ns, name: self._get("configmaps", ns, name))
        app.post(cms, status_code=201)(self._create_config_map)
        app.put(cms + "/{name}")(self._replace_config_map)
        app.delete(cms + "/{name}")(self._delete_config_map)
        pvc = "/api/v1/namespaces/{ns}/persistentvolumeclaims"
        app.get(pvc + "/{name}")(lambda ns, name: self._get("persistentvolumeclaims", ns, name))
        app.delete(pvc + "/{name}")(self._delete_claim)
        return app

    async def _authorise(self, request: Request, call_next: Any) -> Any:
        """Record, authenticate and authorise every request before it is routed, as the API
        server's filters do: a refused request never reaches a handler (nor a 404 or 405)."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path, method = request.url.path, request.method
        self.requests.append(
            Recorded(
                method, path, dict(request.query_params), request.headers.get("content-type"), body
            )
        )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if user is None:
            return _status_response(KubeError(401, "Unauthorized", "Unauthorized"))
        attrs = request_attributes(user, method, path, request.query_params)
        if attrs is not None and not self.authorizer.allowed(attrs):
            self.refused.append(attrs)
            message, details = attrs.forbidden()
            return _status_response(KubeError(403, "Forbidden", message, details=details))
        return await call_next(request)

    async def _gate(self, request: Request) -> None:
        """Inject failures, and let rollouts progress."""
        path, method = request.url.path, request.method
        with self._lock:
            for failure in self._failures:
                if (
                    failure.remaining > 0
                    and failure.method in (None, method)
                    and (failure.path_contains or "") in path
                ):
                    failure.remaining -= 1
                    headers = (
                        {}
                        if failure.retry_after is None
                        else {"Retry-After": str(failure.retry_after)}
                    )
                    raise KubeError(
                        failure.status,
                        "InternalError" if failure.status >= 500 else "TooManyRequests",
                        "injected failure",
                        headers,
                    )
            self._tick()

    def _get_obj(self, kind: str, ns: str, name: str) -> Json:
        obj = self._objects.get((kind, ns, name))
        if obj is None:
            group = _KINDS[kind][0]
            raise KubeError(
                404, "NotFound", f'{kind}{"." + group if group else ""} "{name}" not found'
            )
        return obj

    def _get(self, kind: str, ns: str, name: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._get_obj(kind, ns, name))

    def _list(self, kind: str, ns: str, selector: str | None) -> Json:
        group, kind_name = _KINDS[kind]
        with self._lock:
            items = copy.deepcopy(self._select(kind, ns, selector))
        return {
            "apiVersion": f"{group}/v1" if group else "v1",
            "kind": f"{kind_name}List",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    async def _patch_deployment(self, ns: str, name: str, request: Request) -> Json:
        content_type = (request.headers.get("content-type") or "").split(";")[0]
        kinds = {
            "application/strategic-merge-patch+json": True,
            "application/merge-patch+json": False,
        }
        if content_type not in kinds:
            raise KubeError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
        patch = json.loads(await request.body())
        with self._lock:
            dep = self._get_obj("deployments", ns, name)
            new = _merge(dep, patch, strategic=kinds[content_type])
            if new["spec"] != dep["spec"]:
                new["metadata"]["generation"] += 1
            self._store("deployments", ns, new)
            if new["spec"]["template"] != dep["spec"]["template"] and not new["spec"].get("paused"):
                self._start_rollout(new)
            elif new["spec"] != dep["spec"]:
                new["status"]["observedGeneration"] = new["metadata"]["generation"]
            return copy.deepcopy(new)

    def _pod_log(
        self, ns: str, name: str, container: str | None = None, tailLines: int | None = None
    ) -> PlainTextResponse:
        """A pod's log: what :attr:`logs` holds for its Deployment, the last ``tailLines``."""
        with self._lock:
            pod = self._get_obj("pods", ns, name)
            owner = (pod["metadata"].get("labels") or {}).get(NAME_LABEL, "")
            lines = self.logs.get((ns, owner, container or "app"), "").splitlines(keepends=True)
        return PlainTextResponse("".join(lines[-tailLines:] if tailLines else lines))

    def _delete_pod(self, ns: str, name: str) -> Json:
        """Delete a pod; its ReplicaSet at once makes a new one from the same template."""
        with self._lock:
            pod = self._objects.pop(
                ("pods", ns, self._get_obj("pods", ns, name)["metadata"]["name"])
            )
            owner = pod["metadata"].get("labels", {}).get(NAME_LABEL)
            if owner and ("deployments", ns, owner) in self._objects:
                meta = {k: v for k, v in pod["metadata"].items() if k in ("labels", "annotations")}
                meta["labels"] = {
                    k: v for k, v in meta["labels"].items() if k != "pod-template-hash"
                }
                self._new_pod(ns, owner, {"metadata": meta, "spec": pod["spec"]})
            pod["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return pod

    async def _create_secret(self, ns: str, request: Request) -> Json:
        body = json.loads(await request.body())
        name = body.get("metadata", {}).get("name")
        if not name:
            raise KubeError(422, "Invalid", "Secret is invalid: metadata.name: Required value")
        with self._lock:
            if ("secrets", ns, name) in self._objects:
                raise KubeError(409, "AlreadyExists", f'secrets "{name}" already exists')
            return copy.deepcopy(self._store("secrets", ns, self._secret_from(body)))

    async def _replace_secret(self, ns: str, name: str, request: Request) -> Json:
        body = json.loads(await request.body())
        with self._lock:
            current = self._get_obj("secrets", ns, name)
            version = body.get("metadata", {}).get("resourceVersion")
            if version and version != current["metadata"]["resourceVersion"]:
                raise KubeError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on secrets "{name}"'
                    ": the object has been modified; please apply your changes to the "
                    "latest version and try again",
                )
            body.setdefault("metadata", {})["uid"] = current["metadata"]["uid"]
            return copy.deepcopy(self._store("secrets", ns, self._secret_from(body)))

    def _delete_secret(self, ns: str, name: str) -> Json:
        with self._lock:
            secret = self._objects.pop(
                ("secrets", ns, self._get_obj("secrets", ns, name)["metadata"]["name"])
            )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": "secrets", "uid": secret["metadata"]["uid"]},
        }

    # ConfigMaps: create (409 if taken), replace (409 on a stale resourceVersion, as the API
    # server's optimistic concurrency answers), delete. Keys must be ConfigMap keys.
    async def _create_config_map(self, ns: str, request: Request) -> Json:
        body = self._config_map_from(json.loads(await request.body()))
        name = body["metadata"]["name"]
        with self._lock:
            if ("configmaps", ns, name) in self._objects:
                raise KubeError(409, "AlreadyExists", f'configmaps "{name}" already exists')
            return copy.deepcopy(self._store("configmaps", ns, body))

    async def _replace_config_map(self, ns: str, name: str, request: Request) -> Json:
        body = self._config_map_from(json.loads(await request.body()))
        with self._lock:
            current = self._get_obj("configmaps", ns, name)
            version = body["metadata"].get("resourceVersion")
            if version and version != current["metadata"]["resourceVersion"]:
                raise KubeError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on configmaps "{name}"'
                    ": the object has been modified; please apply your changes to the "
                    "latest version and try again",
                )
            body["metadata"]["uid"] = current["metadata"]["uid"]
            return copy.deepcopy(self._store("configmaps", ns, body))

    def _delete_config_map(self, ns: str, name: str) -> Json:
        with self._lock:
            gone = self._objects.pop(
                ("configmaps", ns, self._get_obj("configmaps", ns, name)["metadata"]["name"])
            )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Success",
            "metadata": {},
            "details": {"name": name, "kind": "configmaps", "uid": gone["metadata"]["uid"]},
        }

    @staticmethod
    def _config_map_from(body: Json) -> Json:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise KubeError(422, "Invalid", "ConfigMap is invalid: metadata.name: Required value")
        for key in body.get("data") or {}:
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key) or len(key) > 253:
                raise KubeError(
                    422, "Invalid", f'ConfigMap "{name}" is invalid: data[{key}]: Invalid value'
                )
        return {**body, "apiVersion": "v1", "kind": "ConfigMap"}

    def _delete_claim(self, ns: str, name: str) -> Json:
        """Delete a claim: gone at once (no pod of the fake holds it; a real one would wait,
        Terminating, until the last pod using it has stopped)."""
        with self._lock:
            kind = "persistentvolumeclaims"
            return self._objects.pop((kind, ns, self._get_obj(kind, ns, name)["metadata"]["name"]))

    @staticmethod
    def _secret_from(body: Json) -> Json:
        data = dict(body.get("data") or {})
        for key, value in (body.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(value.encode()).decode()
        return {**body, "data": data, "apiVersion": "v1", "kind": "Secret"}


@pytest.fixture
def kube_fake() -> Iterator[KubeFake]:
    """A running fake API server; ``kube_fake.api_client()`` talks to it with its token."""
    fake = KubeFake()
    with serve(fake.app) as url:
        fake.url = url
        yield fake
        fake.close()


@pytest.fixture
def kubeconfig(kube_fake: KubeFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig for the Kubernetes fake, found as kubectl finds one: $KUBECONFIG."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": kube_fake.url}}],
        "users": [{"name": "nakama", "user": {"token": kube_fake.token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nakama"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path
