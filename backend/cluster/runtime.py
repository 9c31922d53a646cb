"""Cluster mode's runtime: apps are Kubernetes Deployments that Flux applies from a GitOps
repository; Nakama writes the manifests there and reads the cluster's state back.

Create commits the app's manifests (:func:`flux.manifests.render_files`) to the GitOps project
in one commit; delete removes them in one commit and Flux prunes what they made. Nakama never
applies anything to the cluster itself, so the cluster always shows what the repository says.

Create also gives the app its git read credentials: a GitLab project deploy token
(``read_repository`` only) stored in the Secret ``<name>-git`` (keys ``username`` and ``token``),
which the init container uses to sync the pushed commit onto the code volume. A complete Secret
is left alone, so a repeated create mints no token; delete removes the Secret, and the token
dies with the GitLab project. The token is never logged nor put in an error message.

The app author's environment variables are the Secret ``<name>-env``, one key per variable, which
the app container reads whole (``envFrom``). :meth:`KubernetesRuntime.set_environment` replaces
it and restarts the Deployment with the restartedAt patch of :mod:`code_reloader.restart`, so the
new pods read the new values; delete removes it. Its values are never logged nor put in an error.

Who may open an app follows its visibility (:mod:`flux.gateway`): the Ingress of a private or
internal app asks Nakama's verify endpoint about every request. :meth:`KubernetesRuntime.prepare`
renders the default visibility, private; :meth:`KubernetesRuntime.set_visibility` rewrites the
app's Ingress files (:func:`flux.manifests.gateway_paths`) for another, in one commit.

Operators provide, once per app namespace:

* the pull Secret named by :class:`flux.manifests.GitOpsLayout` (``harbor-pull``) for the images,
  and the GitRepository ``flux-system/gitops`` with write access for Flux's image automation;
* the ExternalName Service ``nakama-gateway`` (``nakama flux render --gateway``) that every app's
  ``/_nakama/`` Ingress routes to. It is shared by all apps, so no app's manifests carry it.

What an app may use (:class:`nakama.limits.AppLimits`: its container's resources, replicas or an
autoscaler, the size of its data volume) comes from the ``limits`` callable given to
:class:`KubernetesRuntime`, the settings' defaults without one, wherever manifests are rendered;
:meth:`KubernetesRuntime.set_limits` rewrites the files that follow them
(:func:`flux.manifests.limits_paths`) in one commit, keeping the image tag and commit the
committed Deployment has. The data volume ``<name>-data`` is out of Flux's garbage collection
(so that no GitOps change can lose an app's data); :meth:`KubernetesRuntime.remove` deletes it.

Reads (:meth:`status`, :meth:`logs`) ask the Kubernetes API once with a short timeout: a project
page must not hang on an unreachable cluster, and :meth:`status` then says ``unknown``.
"""

from __future__ import annotations

import base64
import functools
import posixpath
import time
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, V1ObjectMeta, V1Secret

from backend.cluster.build_records import delete_build_records
from backend.cluster.gitops import GitOpsRepository
from code_reloader.restart import NAME_LABEL, restart_app, rollout_status
from flux.manifests import (
    GIT_TOKEN_KEY,
    GIT_USERNAME_KEY,
    STREAMLIT_HEALTH_PATH,
    WORKLOAD_FILES,
    AppProject,
    GitOpsLayout,
    app_dir,
    config_resources,
    data_claim_name,
    deployment_pins,
    env_secret_name,
    gateway_paths,
    git_secret_name,
    grown_claim,
    image_repository,
    kustomize_config,
    limits_paths,
    probe_for,
    render_files,
)
from flux.resources import mib_quantity
from image_builder.dockerfile import DEFAULT_PORT, default_command
from nakama.access import DEFAULT_VISIBILITY, VISIBILITIES
from nakama.appconfig import CONFIG_FILE, load_app_config
from nakama.clients.gitlab import GitLabClient
from nakama.clients.kubernetes import RetryPolicy, kube_call, to_json
from nakama.errors import Conflict, InvalidInput, NakamaError, NotFound, PermanentError
from nakama.limits import AppLimits, effective_limits
from nakama.logs import get_logger
from nakama.names import validate_project_name
from nakama.ports import AppStatus, BuildRef, Forge
from nakama.settings import Settings
from nakama.variables import redact

log = get_logger(__name__)

# Reads are asked once, briefly: a page shows "unknown" rather than waiting on a dead cluster.
_READ_RETRY = RetryPolicy(attempts=1)
_READ_TIMEOUT_S = 5.0
# Seconds a project list may show an app's cached Kubernetes status (state_version).
STATUS_FRESH_S = 2.0
APP_CONTAINER = "app"  # flux.manifests names the app's container so
DEPLOY_TOKEN_NAME = "nakama-sync"  # noqa: S105 - the name GitLab shows for the token
DEPLOY_TOKEN_SCOPES = ("read_repository",)
# A visibility or limits commit is re-planned this often when the folder changed meanwhile.
_COMMIT_ATTEMPTS = 3


def app_status(deployment: dict[str, Any]) -> AppStatus:
    """The app's state from its Deployment (the API's JSON)."""
    if (deployment.get("spec") or {}).get("replicas", 1) == 0:
        return AppStatus("stopped", "scaled to zero")
    rollout = rollout_status(deployment)
    if rollout.failed:
        return AppStatus("crashed", rollout.message)
    if rollout.done:
        return AppStatus("running")
    return AppStatus("starting", rollout.message)


def crash_of(pods: list[dict[str, Any]]) -> AppStatus | None:
    """``backoff`` if an app container of ``pods`` (the API's JSON) waits in CrashLoopBackOff,
    with the most restarts among them and the last exit; else None."""
    found: AppStatus | None = None
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if container.get("name") != "app" or waiting.get("reason") != "CrashLoopBackOff":
                continue
            restarts = int(container.get("restartCount") or 0)
            last = (container.get("lastState") or {}).get("terminated") or {}
            detail = "CrashLoopBackOff"
            if last:
                detail += f"; last exit: {last.get('reason') or 'code'} {last.get('exitCode')}"
            if found is None or restarts > found.restarts:
                found = AppStatus("backoff", f"{detail}; restarts={restarts}", restarts=restarts)
    return found


class BuildFinder(Protocol):
    """What the runtime asks of the registry: the image built for a dependency hash."""

    def find(self, project: str, dep_hash: str) -> BuildRef | None: ...


def _toml_keys(text: bytes) -> set[str]:
    """The top-level keys of a TOML file that load_app_config has already accepted."""
    return set(tomllib.loads(text.decode("utf-8", "replace")))


def streamlit_command(main_file: str, port: int = DEFAULT_PORT) -> tuple[str, ...]:
    """The generated image's Streamlit command (image_builder.dockerfile.default_command), on
    ``main_file`` instead of app.py."""
    return tuple(main_file if arg == "app.py" else arg for arg in default_command(port))


class KubernetesRuntime:
    """The :class:`nakama.ports.Runtime` of cluster mode."""

    def __init__(
        self,
        *,
        gitops: GitOpsRepository,
        kube: ApiClient,
        forge: Forge,
        settings: Settings,
        gitlab: GitLabClient,
        layout: GitOpsLayout | None = None,
        limits: Callable[[str], AppLimits] | None = None,
        branch: Callable[[str], str] | None = None,
        main_file: Callable[[str], str | None] | None = None,
        registry: BuildFinder | None = None,
    ) -> None:
        """``gitlab`` mints the apps' deploy tokens; ``registry`` finds the image a build made
        (:meth:`deploy_build`; None: the workload is committed with a placeholder tag at once);
        ``limits`` tells a project's limits (its
        overrides on the settings' defaults), None: the settings' defaults for every app;
        ``branch`` a project's deploy branch (None: the settings' for every app), whose name
        its image tags start with; ``main_file`` the script an imported project's app runs
        when its repository does not say (None: the image's command)."""
        deploy_branch = settings.planning.deploy_branch
        self._branch: Callable[[str], str] = branch or (lambda _project: deploy_branch)
        self._main_file: Callable[[str], str | None] = main_file or (lambda _project: None)
        self._gitlab = gitlab
        self._registry = registry
        defaults = effective_limits(settings.limits)
        self._limits: Callable[[str], AppLimits] = limits or (lambda _project: defaults)
        self._gitops = gitops
        self._kube = kube
        self._forge = forge
        self._settings = settings
        self._layout = layout or GitOpsLayout()
        self._namespace = settings.kubernetes.namespace

    def close(self) -> None:
        """Close the Kubernetes client's connections (it is shared with the pipelines)."""
        self._kube.close()  # type: ignore[no-untyped-call]

    # --- the GitOps side -------------------------------------------------------------------
    def manifests(
        self,
        project: str,
        *,
        commit: str | None,
        visibility: str = DEFAULT_VISIBILITY,
        limits: AppLimits | None = None,
        image: tuple[str, str] | None = None,
        health_path: str | None = STREAMLIT_HEALTH_PATH,
        workload: bool = True,
    ) -> dict[str, str]:
        """The app's GitOps files, path -> YAML text. ``commit`` is the one the app runs until
        its first reload (None: none, as for files that do not mention it); ``limits`` None:
        the project's (the ``limits`` callable's); ``image`` (repository, tag) None: the
        registry's repository and a placeholder tag Flux replaces; ``health_path`` the probes'
        path (None: a TCP probe; :meth:`health_path` reads it from the app's nakama.toml);
        ``workload`` False: without the Deployment and its autoscaler."""
        repository, tag = image if image else (None, None)
        main_file = self._main_file(project)
        app = AppProject(
            name=project,
            repo_url=self._forge.clone_url(project),
            branch=self._branch(project),
            command=None if main_file is None else streamlit_command(main_file),
            tag=tag,
            initial_commit=commit,
            image_repository=repository,
            health_path=health_path,
            visibility=visibility,
            limits=limits or self._limits(project),
        )
        return render_files(
            app,
            self._settings.flux,
            harbor=self._settings.harbor,
            namespace=self._namespace,
            layout=self._layout,
            workload=workload,
        )

    def health_path(self, project: str, commit: str) -> str | None:
        """The probes' path for the app at ``commit``, from its nakama.toml (as local mode
        reads it; :func:`flux.manifests.probe_for`); None: a TCP probe. A nakama.toml that
        does not parse is the app author's to fix: InvalidInput names the file and key."""
        found = self._forge.read_files(project, commit, [CONFIG_FILE])
        text = found.get(CONFIG_FILE)
        if text is None:
            return probe_for(health_path=None, custom_run=False)
        config = load_app_config(text.decode("utf-8", "replace"))
        explicit = "health_path" in _toml_keys(text)
        return probe_for(
            health_path=config.health_path if explicit else None,
            custom_run=config.run is not None,
        )

    def _kustomization_file(self, project: str) -> str:
        return f"{self._layout.kustomizations_path.strip('/')}/{project}.yaml"

    def check_can_create(self) -> None:
        self._gitops.check_reach()

    def prepare(self, project: str, *, commit: str) -> None:
        """Give the app its git read credentials, then commit its manifests (one commit, only
        files that are missing). Without a registry to ask, the workload comes too (with a
        placeholder tag); with one, the workload waits for the first image (:meth:`deploy_build`),
        so that Flux never applies a Deployment whose image does not exist."""
        self._ensure_git_secret(project)
        files = self.manifests(
            project,
            commit=commit,
            health_path=self.health_path(project, commit),
            workload=self._registry is None,
        )
        sha = self._gitops.ensure_files(
            files,
            message=f"nakama: add app {project}",
            folders=[app_dir(project, self._settings.flux)],
        )
        log.info("app manifests committed", project=project, gitops_commit=sha)

    def deploy_build(self, project: str, *, commit: str, dep_hash: str | None) -> str:
        """After a build of ``commit`` succeeded: make the app run it. An app without its
        workload in the GitOps repository (its first image) gets it now, with the build's tag
        and ``commit`` baked in, in one commit (``"committed"``); Flux then applies it;
        ``"no image"``: the registry has no image for ``dep_hash``, so nothing is committed.
        An app that has its workload is left to Flux's image automation (``"image
        automation"``): the new tag rolls the pods once, and they sync ``commit``, which the
        pipelines recorded in the build record before the build began (nakama.build_record).
        Restarting here as well rolled the app twice, the first time with the new code on the
        old packages (review D10)."""
        folder = app_dir(validate_project_name(project), self._settings.flux)
        present = self._gitops.files_under(folder)
        if present and f"{folder}/deployment.yaml" not in present:
            return self._commit_workload(project, commit=commit, dep_hash=dep_hash, folder=folder)
        return "image automation"

    def _commit_workload(
        self, project: str, *, commit: str, dep_hash: str | None, folder: str
    ) -> str:
        found = self._registry.find(project, dep_hash) if self._registry and dep_hash else None
        if found is None:
            log.warning("no image for the app's workload yet", project=project, dep_hash=dep_hash)
            return "no image"
        repository = image_repository(project, self._settings.harbor)
        wanted = self.manifests(
            project,
            commit=commit,
            image=(repository, found.tag),
            health_path=self.health_path(project, commit),
        )
        config = f"{folder}/kustomization.yaml"
        workload = {f"{folder}/{name}" for name in WORKLOAD_FILES} & set(wanted)
        listed = config_resources(self._gitops_text(config))
        order = config_resources(wanted[config])
        new = [posixpath.basename(p) for p in sorted(workload)]
        resources = sorted(
            set(listed) | set(new), key=lambda n: order.index(n) if n in order else len(order)
        )
        actions = [self._file_action(path, wanted[path], set()) for path in sorted(workload)]
        actions.append(self._file_action(config, kustomize_config(resources), {config}))
        sha = self._gitops.commit(
            actions, message=f"nakama: deploy app {project} on its first image {found.tag}"
        )
        log.info("app workload committed", project=project, tag=found.tag, gitops_commit=sha)
        return "committed"

    def remove(self, project: str) -> None:
        """Delete the app's manifests in one commit (none if they are gone), which Flux prunes,
        then its data volume (which Flux does not prune), its git Secret (the deploy token goes
        with the GitLab project) and its variables. The volume is deleted at once: Kubernetes
        keeps it until the app's last pod has stopped using it (its pvc-protection finalizer)."""
        sha = self._gitops.remove_files(
            [self._kustomization_file(project)],
            message=f"nakama: remove app {project}",
            folders=[app_dir(project, self._settings.flux)],
        )
        log.info("app manifests removed", project=project, gitops_commit=sha)
        if self._delete_data_claim(project):
            log.info("app data volume deleted", project=project)
        self._delete_git_secret(project)
        if self._delete_secret(env_secret_name(validate_project_name(project))):
            log.info("app variables deleted", project=project)
        if delete_build_records(self._kube, namespace=self._namespace, project=project):
            log.info("app build record deleted", project=project)

    def _delete_data_claim(self, project: str) -> bool:
        """Delete the PersistentVolumeClaim ``<name>-data``; False if it was not there."""
        core = CoreV1Api(self._kube)
        name = data_claim_name(validate_project_name(project))
        try:
            kube_call(
                core.delete_namespaced_persistent_volume_claim,
                name,
                self._namespace,
                what=f"deleting persistentvolumeclaim {self._namespace}/{name}",
            )
        except NotFound:
            return False
        return True

    def app_url(self, project: str) -> str | None:
        return f"https://{project}.{self._settings.flux.app_domain}/"

    # --- who may open the app --------------------------------------------------------------
    def set_visibility(self, project: str, visibility: str) -> None:
        """Make the app's Ingress files say ``visibility`` (private, internal or public), in
        one commit; none when they say it already. Files of the app that do not follow the
        visibility (the Deployment, whose image tag Flux's automation owns) are left alone. An
        app without manifests (not prepared, or removed) is left alone too: prepare renders
        private, the default, so a caller making a new app public calls this after prepare."""
        if visibility not in VISIBILITIES:
            raise InvalidInput(
                f"unknown visibility {visibility[:40]!r}: use one of {', '.join(VISIBILITIES)}"
            )
        flux = self._settings.flux
        folder = app_dir(validate_project_name(project), flux)
        full = self.manifests(project, commit=None, visibility=visibility)
        bare = self.manifests(project, commit=None, visibility=visibility, workload=False)
        owned = gateway_paths(project, flux)

        def plan(present: set[str]) -> list[dict[str, str]]:
            # An app still waiting for its first image has no workload files to list.
            wanted = full if f"{folder}/deployment.yaml" in present else bare
            listed = {p for p in wanted if p.startswith(f"{folder}/") and p not in owned}
            missing = sorted(listed - present)
            if missing:  # kustomization.yaml would list files that are not there
                raise PermanentError(
                    f"the GitOps folder {folder} lacks {', '.join(missing)}; prepare the app again"
                )
            return self._visibility_actions(owned, wanted, present)

        self._commit_app_files(
            project,
            folder,
            plan,
            message=f"nakama: make app {project} {visibility}",
            what="visibility",
            visibility=visibility,
        )

    def _visibility_actions(
        self, owned: tuple[str, ...], wanted: Mapping[str, str], present: set[str]
    ) -> list[dict[str, str]]:
        """GitLab commit actions that make the ``owned`` paths what ``wanted`` says (absent
        from it: deleted), reading only the files that exist."""
        actions: list[dict[str, str]] = []
        for path in owned:
            text = wanted.get(path)
            if text is None:
                if path in present:
                    actions.append({"action": "delete", "file_path": path})
                continue
            if path in present and self._gitops_text(path) == text:
                continue
            actions.append(
                {
                    "action": "update" if path in present else "create",
                    "file_path": path,
                    "content": base64.b64encode(text.encode()).decode(),
                    "encoding": "base64",
                }
            )
        return actions

    def _gitops_text(self, path: str) -> str:
        """A file of the GitOps branch as text (GitOpsRepository writes, but cannot read)."""
        gitops = self._gitops
        handle = self._gitlab.api.projects.get(gitops.project_path, lazy=True)
        content = self._gitlab.call(
            functools.partial(handle.files.raw, file_path=path, ref=gitops.branch),
            what=f"read {path} in {gitops.project_path}",
        )
        if not isinstance(content, bytes):
            raise PermanentError(f"GitLab returned no content for {path!r}")
        return content.decode()

    # --- what the app may use -------------------------------------------------------------
    def set_limits(self, project: str, limits: AppLimits) -> None:
        """Make the app's files that follow its limits say ``limits``, in one commit; none when
        they say it already. The Deployment keeps the image tag and commit it has (Flux's image
        automation owns the tag); the autoscaler comes or goes, and kustomization.yaml's list
        with it; the data volume grows but never shrinks (Kubernetes refuses a smaller claim).
        A file of the app missing from an older Nakama (its data volume, its NetworkPolicy) is
        added. An app without manifests (not prepared, or removed) is left alone: prepare
        renders the project's limits from the ``limits`` callable."""
        flux = self._settings.flux
        folder = app_dir(validate_project_name(project), flux)
        self._commit_app_files(
            project,
            folder,
            lambda present: self._limits_actions(project, limits, folder, present),
            message=f"nakama: set the limits of {project}",
            what="limits",
            **limits.as_dict(),
        )

    def _commit_app_files(
        self,
        project: str,
        folder: str,
        plan: Callable[[set[str]], list[dict[str, str]]],
        *,
        message: str,
        what: str,
        **details: object,
    ) -> None:
        """Commit what ``plan`` makes of the files present in the app's GitOps ``folder``, in
        one commit; none when it plans nothing, or when the folder is empty (the app has no
        manifests). A file created or deleted meanwhile makes GitLab refuse the commit: the
        files are listed and planned again, a few times."""
        for attempt in range(_COMMIT_ATTEMPTS):
            present = self._gitops.files_under(folder)
            if not present:
                log.info(f"no app manifests to set the {what} of", project=project)
                return
            actions = plan(present)
            if not actions:
                return
            try:
                sha = self._gitops.commit(actions, message=message)
            except (Conflict, PermanentError) as exc:  # a file created or deleted meanwhile
                if attempt + 1 == _COMMIT_ATTEMPTS:
                    raise
                log.info(f"{what} commit re-planned", project=project, reason=str(exc)[:200])
                continue
            log.info(
                f"app {what} committed",
                project=project,
                gitops_commit=sha,
                files=len(actions),
                **details,
            )
            return

    def data_usage(self, project: str) -> int | None:
        """None: cluster mode cannot tell cheaply. The kubelet knows each volume's usage (its
        stats summary, ``kubelet_volume_stats_used_bytes``), but Nakama reads neither the
        kubelet nor a metrics store, and a volume's size is not what the app uses of it."""
        return None

    def _limits_actions(
        self, project: str, limits: AppLimits, folder: str, present: set[str]
    ) -> list[dict[str, str]]:
        """GitLab commit actions that make the app's limits files say ``limits``."""
        flux = self._settings.flux
        deployment, claim, config = (
            f"{folder}/deployment.yaml",
            f"{folder}/persistentvolumeclaim-data.yaml",
            f"{folder}/kustomization.yaml",
        )
        if config not in present:
            raise PermanentError(
                f"the GitOps folder {folder} lacks {config}; prepare the app again"
            )
        owned = set(limits_paths(project, flux))
        if deployment in present:
            pins = deployment_pins(self._gitops_text(deployment))
            wanted = self.manifests(
                project,
                commit=pins.initial_commit,
                limits=limits,
                image=(pins.image_repository, pins.tag),
                health_path=pins.health_path,
            )
        else:  # no image yet: the workload comes with the first one, with these limits
            wanted = self.manifests(project, commit=None, limits=limits, workload=False)
            owned -= {f"{folder}/{name}" for name in WORKLOAD_FILES}
        texts: dict[str, str | None] = {}  # path -> new text, None: delete
        for path in sorted(owned):
            text = wanted.get(path)
            if text is None:
                if path in present:
                    texts[path] = None
            elif path == claim and path in present:  # only its size may change
                grown = grown_claim(self._gitops_text(path), mib_quantity(limits.disk_mib))
                if grown is not None:
                    texts[path] = grown
            elif path not in present or self._gitops_text(path) != text:
                texts[path] = text
        skip = owned | set(gateway_paths(project, flux))
        for path, text in wanted.items():  # files an older Nakama did not write
            if path.startswith(f"{folder}/") and path not in skip and path not in present:
                texts[path] = text
        created = [p for p, t in texts.items() if t is not None and p not in present]
        deleted = [p for p, t in texts.items() if t is None]
        if created or deleted:
            listed = config_resources(self._gitops_text(config))
            order = config_resources(wanted[config])
            gone = {posixpath.basename(p) for p in deleted}
            new = sorted(
                (posixpath.basename(p) for p in created),
                key=lambda n: order.index(n) if n in order else len(order),
            )
            resources = [r for r in listed if r not in gone] + [n for n in new if n not in listed]
            texts[config] = kustomize_config(resources)
        return [self._file_action(path, text, present) for path, text in texts.items()]

    @staticmethod
    def _file_action(path: str, text: str | None, present: set[str]) -> dict[str, str]:
        if text is None:
            return {"action": "delete", "file_path": path}
        return {
            "action": "update" if path in present else "create",
            "file_path": path,
            "content": base64.b64encode(text.encode()).decode(),
            "encoding": "base64",
        }

    # --- the app's git read credentials ----------------------------------------------------
    def _ensure_git_secret(self, project: str) -> None:
        """Create (or complete) the Secret ``<name>-git`` from a new deploy token; a complete
        Secret is left alone, so no token is minted twice."""
        core = CoreV1Api(self._kube)
        name = git_secret_name(validate_project_name(project))
        where = f"{self._namespace}/{name}"
        try:
            found = kube_call(
                core.read_namespaced_secret,
                name,
                self._namespace,
                what=f"reading secret {where}",
            )
        except NotFound:
            found = None
        data = (found.data or {}) if found is not None else {}
        if all(data.get(key) for key in (GIT_USERNAME_KEY, GIT_TOKEN_KEY)):
            return
        username, token = self._mint_deploy_token(project)
        labels = {"app.kubernetes.io/name": project, "app.kubernetes.io/managed-by": "nakama"}
        body = V1Secret(
            metadata=V1ObjectMeta(name=name, namespace=self._namespace, labels=labels),
            type="Opaque",
            string_data={GIT_USERNAME_KEY: username, GIT_TOKEN_KEY: token},
        )
        create = functools.partial(core.create_namespaced_secret, self._namespace, body)
        replace = functools.partial(core.replace_namespaced_secret, name, self._namespace, body)
        exists = found is not None
        try:
            if not exists:
                try:
                    kube_call(create, what=f"creating secret {where}")
                except Conflict:  # made meanwhile, or by a retried create
                    exists = True
            if exists:
                kube_call(replace, what=f"replacing secret {where}")
        except NakamaError as exc:
            if token in str(exc):  # the API server does not echo data; make sure of it
                raise type(exc)(str(exc).replace(token, "[REDACTED]")) from None
            raise
        log.info("app git credentials stored", project=project, secret=where, username=username)

    def _mint_deploy_token(self, project: str) -> tuple[str, str]:
        """A new read-only deploy token of the app's GitLab project: (username, token)."""
        client = self._gitlab
        path = f"{client.settings.group.strip('/')}/{validate_project_name(project)}"
        handle = client.api.projects.get(path, lazy=True)
        spec = {"name": DEPLOY_TOKEN_NAME, "scopes": list(DEPLOY_TOKEN_SCOPES)}
        created = client.call(
            lambda: handle.deploytokens.create(spec), what=f"create a deploy token for {path}"
        )
        username, token = str(created.username), str(created.token)
        if not username or not token:
            raise PermanentError(f"GitLab: create a deploy token for {path}: no credentials")
        return username, token

    def _delete_git_secret(self, project: str) -> None:
        """Delete the Secret ``<name>-git``; a missing one is fine."""
        if self._delete_secret(git_secret_name(validate_project_name(project))):
            log.info("app git credentials deleted", project=project)

    def _delete_secret(self, name: str) -> bool:
        """Delete Secret ``name`` of the apps' namespace; False if it was not there."""
        core = CoreV1Api(self._kube)
        try:
            kube_call(
                core.delete_namespaced_secret,
                name,
                self._namespace,
                what=f"deleting secret {self._namespace}/{name}",
            )
        except NotFound:
            return False
        return True

    # --- the app's environment variables ---------------------------------------------------
    def set_environment(self, project: str, variables: Mapping[str, str]) -> None:
        """Make the Secret ``<name>-env`` hold exactly ``variables``, then restart the app's
        Deployment so that its pods read them. A Deployment Flux has not applied yet is left
        alone: its first pods read the Secret anyway."""
        name = env_secret_name(validate_project_name(project))
        where = f"{self._namespace}/{name}"
        try:
            self._write_secret(project, name, dict(variables))
        except NakamaError as exc:  # the API server does not echo data; make sure of it
            raise type(exc)(redact(str(exc), variables.values())) from None
        try:
            restart_app(
                self._kube,
                namespace=self._namespace,
                name=project,
                commit=None,  # the commit the template names already
                method="patch",  # a template change: every pod is replaced, none keeps old values
                now=datetime.now(UTC),
            )
        except NotFound:
            log.info("app variables stored; no deployment to restart yet", project=project)
            return
        log.info("app restarted with new variables", project=project, secret=where)

    def _write_secret(self, project: str, name: str, data: dict[str, str]) -> None:
        """Create or replace Opaque Secret ``name`` with ``data`` (as stringData)."""
        core = CoreV1Api(self._kube)
        where = f"{self._namespace}/{name}"
        labels = {"app.kubernetes.io/name": project, "app.kubernetes.io/managed-by": "nakama"}
        body = V1Secret(
            metadata=V1ObjectMeta(name=name, namespace=self._namespace, labels=labels),
            type="Opaque",
            string_data=data,
        )
        create = functools.partial(core.create_namespaced_secret, self._namespace, body)
        replace = functools.partial(core.replace_namespaced_secret, name, self._namespace, body)
        try:
            kube_call(replace, what=f"replacing secret {where}")
            return
        except NotFound:
            pass
        try:
            kube_call(create, what=f"creating secret {where}")
        except Conflict:  # made meanwhile, or by a retried create
            kube_call(replace, what=f"replacing secret {where}")

    # --- the cluster side ------------------------------------------------------------------
    def state_version(self) -> tuple[int, ...]:
        """Kubernetes tells no one here when a Deployment's status changes: a cached status is
        taken for fresh for STATUS_FRESH_S seconds (the cluster's own status lags as much)."""
        return (int(time.monotonic() // STATUS_FRESH_S),)

    def status(self, project: str) -> AppStatus:
        apps = AppsV1Api(self._kube)
        try:
            found = kube_call(
                apps.read_namespaced_deployment,
                project,
                self._namespace,
                what=f"reading deployment {self._namespace}/{project}",
                retry=_READ_RETRY,
                timeout_s=_READ_TIMEOUT_S,
            )
        except NotFound:
            return AppStatus("stopped", "no deployment yet: Flux has not applied the manifests")
        except NakamaError as exc:
            return AppStatus("unknown", str(exc))
        status = app_status(to_json(self._kube, found))
        if status.state != "starting":
            return status
        # Not all replicas ready: a crash loop shows only in the pods.
        try:
            pods = kube_call(
                CoreV1Api(self._kube).list_namespaced_pod,
                self._namespace,
                label_selector=f"{NAME_LABEL}={project}",
                what=f"listing pods of {self._namespace}/{project}",
                retry=_READ_RETRY,
                timeout_s=_READ_TIMEOUT_S,
            )
        except NakamaError:
            return status
        listed = to_json(self._kube, pods)
        return crash_of(list(listed.get("items") or [])) or status

    def logs(self, project: str, *, tail: int) -> str:
        """The last ``tail`` lines of the app container of the app's newest pod ("" if none)."""
        core = CoreV1Api(self._kube)
        where = f"{self._namespace}/{project}"
        pods = kube_call(
            core.list_namespaced_pod,
            self._namespace,
            label_selector=f"{NAME_LABEL}={project}",
            what=f"listing pods of {where}",
            retry=_READ_RETRY,
            timeout_s=_READ_TIMEOUT_S,
        )
        live = [
            (str(pod.metadata.creation_timestamp or ""), str(pod.metadata.name))
            for pod in pods.items
            if pod.metadata is not None
            and pod.metadata.name
            and pod.metadata.deletion_timestamp is None
        ]
        if not live:
            return ""
        _, newest = max(live)
        try:
            text = kube_call(
                core.read_namespaced_pod_log,
                newest,
                self._namespace,
                container=APP_CONTAINER,
                tail_lines=tail,
                what=f"reading the log of pod {self._namespace}/{newest}",
                retry=_READ_RETRY,
                timeout_s=_READ_TIMEOUT_S,
            )
        except NotFound:  # gone meanwhile, or the container has not started yet
            return ""
        return str(text or "")
