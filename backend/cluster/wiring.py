"""Cluster mode's adapters made from settings: the clients, each made once and shared by every
adapter that talks to its service, and the adapters on top. The composition root
(:func:`backend.app.build_platform`) calls :func:`connect` when ``settings.mode`` is ``"cluster"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from backend.cluster.pipelines import GitLabPipelines
from backend.cluster.reconcile import Reconciler
from backend.cluster.registry import HarborRegistry
from backend.cluster.runtime import KubernetesRuntime
from flux.manifests import GitOpsLayout
from nakama.clients.gitlab import GitLabClient
from nakama.clients.harbor import HarborClient
from nakama.clients.kubernetes import api_client
from nakama.clients.oci import OciClient
from nakama.db.session import Database
from nakama.limits import AppLimits
from nakama.settings import Settings


@dataclass
class ClusterAdapters:
    forge: GitLabForge
    registry: HarborRegistry
    runtime: KubernetesRuntime
    pipelines: GitLabPipelines
    _gitlab: GitLabClient
    _harbor: HarborClient
    _oci: OciClient

    def close(self) -> None:
        """Close every client's connections."""
        self._gitlab.close()
        self._harbor.close()
        self._oci.close()
        self.runtime.close()

    def reconciler(
        self,
        settings: Settings,
        db: Database,
        *,
        interval_s: float,
        finish_delete: Callable[[str], None] | None = None,
    ) -> Reconciler:
        """The reconcile loop's step (see :mod:`backend.cluster.reconcile`), run every
        ``interval_s`` seconds."""
        return Reconciler(
            db=db,
            forge=self.forge,
            registry=self.registry,
            pipelines=self.pipelines,
            planning=settings.planning,
            interval_s=interval_s,
            finish_delete=finish_delete,
        )


def connect(
    settings: Settings,
    db: Database,
    *,
    limits: Callable[[str], AppLimits] | None = None,
    branch: Callable[[str], str] | None = None,
    main_file: Callable[[str], str | None] | None = None,
) -> ClusterAdapters:
    """GitLab (repositories, CI), Harbor (images), Kubernetes and Flux (apps), per ``settings``.
    ``limits`` tells a project's limits to the runtime (None: the settings' defaults for all),
    ``branch`` its deploy branch and ``main_file`` its recorded script (KubernetesRuntime).

    The Kubernetes client is configured as ``kubectl`` is: the pod's service account inside a
    cluster, else ``$KUBECONFIG`` or ``~/.kube/config``. No connection is made here.
    """
    gitlab = GitLabClient(settings.gitlab)
    harbor = HarborClient(settings.harbor)
    oci = OciClient.from_settings(settings.harbor)
    kube = api_client()
    forge = GitLabForge(gitlab, hook_base_url=settings.base_url)
    layout = GitOpsLayout()
    gitops = GitOpsRepository(
        gitlab,
        project_path=settings.flux.gitops_project,
        branch=settings.flux.gitops_branch,
        author_name=layout.author_name,
        author_email=layout.author_email,
    )
    registry = HarborRegistry(harbor=harbor, oci=oci, project=settings.harbor.project)
    runtime = KubernetesRuntime(
        gitops=gitops,
        kube=kube,
        forge=forge,
        gitlab=gitlab,
        settings=settings,
        layout=layout,
        limits=limits,
        branch=branch,
        main_file=main_file,
        registry=registry,
    )
    return ClusterAdapters(
        forge=forge,
        registry=registry,
        runtime=runtime,
        pipelines=GitLabPipelines(
            db=db,
            gitlab=gitlab,
            forge=forge,
            kube=kube,
            settings=settings,
            deploy=runtime.deploy_build,
        ),
        _gitlab=gitlab,
        _harbor=harbor,
        _oci=oci,
    )
