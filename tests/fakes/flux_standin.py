"""A test-side stand-in for Flux and the kubelet, between the GitLab fake and the Kubernetes fake.

Tests used to say "Flux applies the committed manifests" by calling ``kube_fake.add_deployment``
with a ready Deployment, which hid what the real chain does with Nakama's files (review D5, D6,
D9). This stand-in does that chain's work from what Nakama really committed:

* **source-controller**: the GitOps repository's branch head, read from the GitLab fake's bare
  repository (its test API, :mod:`tests.fakes.gitlab_git`); :meth:`FluxStandIn.poll` is the
  GitRepository's interval, :meth:`FluxStandIn.receiver` the notification-controller Receiver
  (type ``gitlab``) that a GitLab push hook on the GitOps project calls, so that a commit applies
  at once rather than at the next poll.
* **kustomize-controller**: every ``<kustomizations_path>/*.yaml`` Flux Kustomization, its
  ``spec.path`` folder's ``kustomization.yaml`` and the files it lists, server-side-applied into
  the Kubernetes fake as field manager ``kustomize-controller`` (other managers' fields, such as
  the reloader's annotations, stay: kustomize-controller ``kustomization_controller.go``
  takes over only kubectl's and its own); objects no longer listed are pruned unless annotated
  ``kustomize.toolkit.fluxcd.io/prune: disabled``.
* **image-automation-controller**: :meth:`FluxStandIn.automate_images` picks each ImagePolicy's
  newest tag (its ``filterTags`` pattern, ``extract``, numerical ``asc``) from the registry and
  pushes a commit rewriting the ``{"$imagepolicy": ...}`` setter markers (``ns:name`` the whole
  image, ``ns:name:tag`` the tag) over git, as the controller does.
* **kubelet**: every pod the fake's Deployment controller makes is run here. An image on the
  test registry's host that the registry does not have is ``ImagePullBackOff``; the init
  container's environment is resolved as the kubelet resolves it (a downward-API annotation that
  is absent is ``""``, a missing Secret key is ``CreateContainerConfigError``) and its real shell
  line is run with ``nakama`` stubbed, so the commit it would sync (or its failure) is what sh
  makes of it; the app container's probes are sent to the app's stand-in server over HTTP
  (success is 200-399) or TCP, so an app that does not answer its probe path is not ready.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ruamel.yaml import YAML

from nakama.build_record import choose_commit
from tests.fakes import gitlab_git
from tests.fakes.gitlab import GitLabFake
from tests.fakes.kubernetes import NAME_LABEL, KubeFake
from tests.support import serve

MANAGER = "kustomize-controller"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
PRUNE_ANNOTATION = "kustomize.toolkit.fluxcd.io/prune"
_MARKER = re.compile(r'#\s*\{"\$imagepolicy":\s*"(?P<ref>[^"]+)"\}')
Json = dict[str, Any]


@dataclass(frozen=True)
class PodRun:
    """What one pod of an app did: its image, the commit its init container synced (None if
    it never got that far), and whether it became ready, else why not."""

    app: str
    pod: str
    image: str
    commit: str | None
    ready: bool
    reason: str
    at: float  # time.monotonic() when it started


@dataclass(frozen=True)
class Applied:
    revision: str
    at: float  # time.monotonic() when the apply finished


@dataclass
class FluxStandIn:
    gitlab: GitLabFake
    kube: KubeFake
    gitops: str  # the GitOps project's path in the GitLab fake
    registry_host: str  # images on this host are pulled from the test registry
    image_exists: Callable[[str], bool]  # "host/repo:tag" -> is it in the registry?
    list_tags: Callable[[str], list[str]] = lambda _repo: []  # "repo" (no host) -> tags
    branch: str = "main"
    kustomizations_path: str = "clusters/nakama/apps"
    # app name -> base URL of a server standing in for the app's container (its probes go
    # there); an app without one passes its probes
    app_servers: dict[str, str] = field(default_factory=dict)
    receiver_token: str = "receiver-token-0123456789abcdef"
    revision: str | None = None
    applied: list[Applied] = field(default_factory=list)
    runs: list[PodRun] = field(default_factory=list)
    receiver_calls: list[int] = field(default_factory=list)  # the status of each hook call
    _inventory: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stubs: Path | None = None

    def __post_init__(self) -> None:
        self.kube.pod_status = self._kubelet

    # --- source-controller + kustomize-controller ----------------------------------------
    def head(self) -> str | None:
        return gitlab_git.branch_head(self.gitlab.project(self.gitops).repo, self.branch)

    def poll(self) -> str | None:
        """One GitRepository interval: apply the branch head if it is a new revision."""
        with self._lock:
            head = self.head()
            if head is None or head == self.revision:
                return self.revision
            self._apply_revision(head)
            return head

    def _apply_revision(self, revision: str) -> None:
        repo = self.gitlab.project(self.gitops).repo
        files = {
            path: gitlab_git.read_blob(repo, blob)
            for path, (_mode, blob) in gitlab_git.list_tree(repo, revision).items()
        }
        folder = self.kustomizations_path.strip("/") + "/"
        seen: set[str] = set()
        for path in sorted(p for p in files if p.startswith(folder) and p.endswith(".yaml")):
            for doc in _load(files[path]):
                if doc.get("apiVersion") == KUSTOMIZE_API and doc.get("kind") == "Kustomization":
                    name = f"{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
                    seen.add(name)
                    self._apply_kustomization(name, doc, files)
        for name in sorted(set(self._inventory) - seen):  # its file is gone: prune it
            self._prune(self._inventory.pop(name), set())
        self.revision = revision
        self.applied.append(Applied(revision, time.monotonic()))

    def _apply_kustomization(self, name: str, doc: Json, files: Mapping[str, bytes]) -> None:
        folder = str(doc["spec"]["path"]).removeprefix("./").strip("/")
        config = files.get(f"{folder}/kustomization.yaml")
        objects: list[Json] = []
        if config is not None:
            for resource in (_load(config) or [{}])[0].get("resources") or []:
                objects += _load(files[f"{folder}/{resource}"])
        applied: set[tuple[str, str, str]] = set()
        for obj in objects:
            stored = self.kube.apply(obj, manager=MANAGER)
            meta = stored["metadata"]
            applied.add((stored["kind"], meta["namespace"], meta["name"]))
        if doc["spec"].get("prune"):
            self._prune(self._inventory.get(name, set()), applied)
        self._inventory[name] = applied

    def _prune(self, before: set[tuple[str, str, str]], now: set[tuple[str, str, str]]) -> None:
        for kind, namespace, obj_name in sorted(before - now):
            live = self.kube.get_object(kind, obj_name, namespace=namespace)
            annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
            if annotations.get(PRUNE_ANNOTATION) == "disabled":
                continue
            self.kube.delete_object(kind, obj_name, namespace=namespace)

    # --- notification-controller's Receiver ----------------------------------------------
    def webhook_path(self, *, name: str = "gitops", namespace: str = "flux-system") -> str:
        """Flux's ``status.webhookPath``: ``/hook/`` + sha256(token + name + namespace)."""
        digest = hashlib.sha256(f"{self.receiver_token}{name}{namespace}".encode()).hexdigest()
        return f"/hook/{digest}"

    @contextmanager
    def receiver(self) -> Iterator[str]:
        """Serve the GitOps Receiver (type gitlab, events Push Hook); yields its hook URL. A
        valid call answers at once and reconciles in the background, as the controller
        annotates the GitRepository and returns."""
        app = FastAPI()
        path = self.webhook_path()

        @app.post("/hook/{digest}")
        async def hook(digest: str, request: Request) -> JSONResponse:
            if f"/hook/{digest}" != path:
                self.receiver_calls.append(404)
                return JSONResponse({"error": "receiver not found"}, status_code=404)
            token = request.headers.get("X-Gitlab-Token", "")
            if not hmac.compare_digest(token, self.receiver_token):
                self.receiver_calls.append(400)
                return JSONResponse({"error": "invalid token"}, status_code=400)
            if request.headers.get("X-Gitlab-Event") != "Push Hook":
                self.receiver_calls.append(200)  # filtered out by spec.events
                return JSONResponse({})
            self.receiver_calls.append(200)
            threading.Thread(target=self.poll, daemon=True).start()
            return JSONResponse({})

        with serve(app) as url:
            yield f"{url}{path}"

    # --- image-automation-controller -------------------------------------------------------
    def latest_tag(self, policy: Json) -> str | None:
        """The tag an ImagePolicy (numerical asc on ``extract``) selects now."""
        repo_obj = self.kube.get_object(
            "ImageRepository",
            policy["spec"]["imageRepositoryRef"]["name"],
            namespace=policy["metadata"]["namespace"],
        )
        if repo_obj is None:
            return None
        image = str(repo_obj["spec"]["image"])
        repository = image.split("/", 1)[1] if "/" in image else image
        pattern = re.compile(policy["spec"]["filterTags"]["pattern"])
        extract = str(policy["spec"]["filterTags"].get("extract") or "")
        best: tuple[float, str] | None = None
        for tag in self.list_tags(repository):
            match = pattern.search(tag)
            if match is None:
                continue
            try:
                number = float(_expand(extract, match))
            except ValueError:
                continue
            if best is None or number > best[0]:
                best = (number, tag)
        return best[1] if best else None

    def automate_images(self) -> str | None:
        """One run of every ImageUpdateAutomation: rewrite the setter markers under its
        ``update.path`` to its policies' newest tags, and push one commit if anything changed.
        Returns the new commit, or None."""
        with self._lock:
            head = self.head()
            if head is None:
                return None
            repo = self.gitlab.project(self.gitops).repo
            files = {
                p: gitlab_git.read_blob(repo, b)
                for p, (_m, b) in gitlab_git.list_tree(repo, head).items()
            }
            policies = {}
            for (kind, ns, name), obj in list(self.kube._objects.items()):
                if kind == "imagepolicies":
                    tag = self.latest_tag(obj)
                    image = self._policy_image(obj)
                    if tag and image:
                        policies[f"{ns}:{name}"] = (image, tag)
            changed: dict[str, str] = {}
            for path, data in files.items():
                text = data.decode("utf-8", "replace")
                if '"$imagepolicy"' not in text:
                    continue
                new = _set_markers(text, policies)
                if new != text:
                    changed[path] = new
            if not changed:
                return None
            return self._push(changed)

    def _policy_image(self, policy: Json) -> str | None:
        repo_obj = self.kube.get_object(
            "ImageRepository",
            policy["spec"]["imageRepositoryRef"]["name"],
            namespace=policy["metadata"]["namespace"],
        )
        return str(repo_obj["spec"]["image"]) if repo_obj else None

    def _push(self, changed: Mapping[str, str]) -> str:
        with tempfile.TemporaryDirectory() as work:
            env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
            url = self.gitlab.git_url(self.gitops)

            def git(*args: str) -> str:
                return subprocess.run(
                    ["git", *args], cwd=work, env=env, check=True, capture_output=True, text=True
                ).stdout.strip()

            git("clone", "-q", "--branch", self.branch, url, ".")
            for path, text in changed.items():
                (Path(work) / path).write_text(text)
            identity = ("-c", "user.name=fluxcdbot", "-c", "user.email=fluxcdbot@users.noreply")
            git(*identity, "commit", "-qam", "deploy the newest image")
            git("push", "-q", "origin", f"HEAD:{self.branch}")
            return git("rev-parse", "HEAD")

    # --- the kubelet ----------------------------------------------------------------------------
    def _kubelet(self, namespace: str, deployment: str, pod: Json) -> Json:
        spec = pod["spec"]
        name = pod["metadata"]["name"]
        annotations = pod["metadata"].get("annotations") or {}
        app = [c for c in spec.get("containers") or [] if c.get("name") == "app"] or spec.get(
            "containers", []
        )
        image = str(app[0].get("image", "")) if app else ""
        commit: str | None = None

        def result(ready: bool, reason: str, phase: str = "Pending") -> Json:
            self.runs.append(PodRun(deployment, name, image, commit, ready, reason, time.time()))
            conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
            state = {"running": {}} if ready else {"waiting": {"reason": reason}}
            return {
                "phase": "Running" if ready else phase,
                "conditions": conditions,
                "containerStatuses": [{"name": "app", "image": image, "state": state}],
            }

        for container in [*(spec.get("initContainers") or []), *app]:
            ref = str(container.get("image", ""))
            if ref.startswith(f"{self.registry_host}/") and not self.image_exists(ref):
                return result(False, "ImagePullBackOff")
        for init in spec.get("initContainers") or []:
            env, problem = self._environment(namespace, init, annotations)
            if problem:
                return result(False, "CreateContainerConfigError")
            code, synced = self._run_init(init, env, volumes=self._config_maps(namespace, spec))
            if code != 0:
                return result(False, "Init:Error")
            commit = synced
        if app and not self._probe(deployment, app[0]):
            return result(False, "CrashLoopBackOff", phase="Running")
        return result(True, "Running", phase="Running")

    def _environment(
        self, namespace: str, container: Json, annotations: Mapping[str, str]
    ) -> tuple[dict[str, str], str | None]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
                env[item["name"]] = annotations.get(match.group(1), "") if match else ""
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self.kube.secret(ref["name"], namespace=namespace)
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    return env, f"secret {ref['name']} key {ref['key']} missing"
                env[item["name"]] = data[ref["key"]]
        return env, None

    def _config_maps(self, namespace: str, spec: Json) -> dict[str, dict[str, str] | None]:
        """The pod's configMap volumes: volume name -> the ConfigMap's data (None: absent)."""
        out: dict[str, dict[str, str] | None] = {}
        for volume in spec.get("volumes") or []:
            ref = volume.get("configMap")
            if ref is not None:
                found = self.kube.get_object("ConfigMap", ref["name"], namespace=namespace)
                out[volume["name"]] = None if found is None else dict(found.get("data") or {})
        return out

    def _run_init(
        self,
        container: Json,
        env: Mapping[str, str],
        *,
        volumes: Mapping[str, dict[str, str] | None],
    ) -> tuple[int, str | None]:
        """Run the init container's own command with sh, ``nakama`` and ``mkdir`` stubbed: the
        stub records the arguments it was given; the commit it syncs is ``--commit``, or, with
        ``--builds``, what the real ``nakama reload sync`` chooses from the mounted build record
        (nakama.build_record.choose_commit). Returns (exit code, that commit)."""
        command = list(container.get("command") or [])
        if command[:2] != ["/bin/sh", "-c"]:
            return 0, None
        stubs = self._stub_dir()
        with tempfile.NamedTemporaryFile("r", suffix=".args") as out:
            run_env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_OUT": out.name, **env}
            done = subprocess.run(
                ["/bin/sh", "-c", command[2]], env=run_env, capture_output=True, timeout=30
            )
            args = shlex.split(Path(out.name).read_text() or "")

        def arg(name: str) -> str | None:
            return args[args.index(name) + 1] if name in args else None

        commit = arg("--commit")
        folder = arg("--builds")
        if commit and folder is not None:
            mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            # No such mount, or an optional ConfigMap that is absent: the real sync reads no file.
            record = volumes.get(mounted.get(folder, ""), None) or {}
            commit = choose_commit(
                commit=commit,
                pipeline=arg("--pipeline"),
                image_tag=arg("--image-tag"),
                builds=record,
            )
        return done.returncode, commit

    def _stub_dir(self) -> Path:
        if self._stubs is None:
            self._stubs = Path(tempfile.mkdtemp(prefix="flux-standin-"))
            nakama = self._stubs / "nakama"
            nakama.write_text('#!/bin/sh\nprintf "%s " "$@" > "$STUB_OUT"\n')
            mkdir = self._stubs / "mkdir"
            mkdir.write_text("#!/bin/sh\nexit 0\n")  # the data volume is not on this machine
            for stub in (nakama, mkdir):
                stub.chmod(0o755)
        return self._stubs

    def _probe(self, app: str, container: Json) -> bool:
        """The startup and readiness probes against the app's stand-in server."""
        base = self.app_servers.get(app)
        if base is None:
            return True
        for key in ("startupProbe", "readinessProbe"):
            probe = container.get(key)
            if not probe:
                continue
            if "httpGet" in probe:
                try:
                    status = httpx.get(
                        base + probe["httpGet"].get("path", "/"), timeout=3
                    ).status_code
                except httpx.HTTPError:
                    return False
                if not 200 <= status < 400:
                    return False
            elif "tcpSocket" in probe:
                parts = urlsplit(base)
                try:
                    with socket.create_connection((parts.hostname, parts.port or 80), timeout=3):
                        pass
                except OSError:
                    return False
        return True

    # --- for assertions ---------------------------------------------------------------------------
    def pods_of(self, app: str) -> list[PodRun]:
        """Every pod of ``app`` the stand-in ran, oldest first."""
        return [r for r in self.runs if r.app == app]

    def live_pods(self, app: str) -> list[PodRun]:
        """The pods of ``app`` that exist now."""
        names = {p["metadata"]["name"] for p in self.kube.pods(app)}
        return [r for r in self.runs if r.app == app and r.pod in names]

    def wait_applied(self, revision: str, *, timeout: float = 30.0) -> Applied:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [a for a in self.applied if a.revision == revision]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"GitOps revision {revision[:12]} not applied after {timeout}s")


def _load(data: bytes) -> list[Json]:
    return [copy.deepcopy(d) for d in YAML(typ="safe", pure=True).load_all(data.decode()) if d]


def _expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.ExpandString``: ``$name`` / ``${name}`` become the named group's text."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: match.groupdict().get(m.group(1)) or "", template)


def _set_markers(text: str, policies: Mapping[str, tuple[str, str]]) -> str:
    """Rewrite the value on each line that carries a setter marker, as the Setters strategy
    does: ``ns:name`` sets the whole image, ``ns:name:tag`` the tag, ``ns:name:name`` the
    repository."""
    out = []
    for line in text.splitlines(keepends=True):
        marker = _MARKER.search(line)
        if marker is None:
            out.append(line)
            continue
        ref = marker.group("ref")
        policy, _, part = ref.rpartition(":") if ref.count(":") == 2 else (ref, "", "")
        found = policies.get(policy)
        if found is None:
            out.append(line)
            continue
        image, tag = found
        value = {"": f"{image}:{tag}", "tag": tag, "name": image}[part]
        head, _, _rest = line.partition(": ")
        end = "\n" if line.endswith("\n") else ""
        out.append(f"{head}: {value} {marker.group(0)}{end}")
    return "".join(out)


__all__ = ["NAME_LABEL", "Applied", "FluxStandIn", "PodRun"]
