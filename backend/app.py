"""The composition root: picks the adapters once from settings (local or cluster mode) and builds
the FastAPI app that serves the API, the webhook endpoints and, in local mode, the git
repositories on one port."""

from __future__ import annotations

import functools
import gc
import hashlib
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.api import make_api_router
from backend.databases import DatabaseService
from backend.docs_ui import install_docs
from backend.gateway.front import Gateway
from backend.gateway.metrics import GatewayMetrics
from backend.gateway.proxy import Upstream
from backend.gateway.signin import make_gateway_router
from backend.gateway.viewer import Viewers
from backend.http_errors import status_of
from backend.limits import LimitService, stored_limits
from backend.local.forge import LocalForge
from backend.local.gitserver import make_git_router
from backend.local.jobs import LocalPipelines
from backend.local.post_receive import PushContext
from backend.local.reconcile import LocalReconciler
from backend.local.registry import LocalRegistry
from backend.local.routes import Routes
from backend.local.runtime import LocalRuntime
from backend.local.supervisor import Supervisor
from backend.metrics import install_metrics
from backend.notifications import NotificationService
from backend.projects import (
    ProjectService,
    cluster_build_policy,
    local_build_policy,
    read_starter_kit,
    recorded_branch,
    recorded_main_file,
)
from backend.retention import LocalFiles, Retention
from backend.sharing import MemberChanged, Sharing
from backend.users import UserRemoval
from backend.variables import VariableService, check_secrets, stored_environment
from backend.web.mount import WebAuth, install_web
from backend.web.views import Renderer
from image_builder.environments import clean_partial_builds
from nakama import __version__
from nakama.access import GITLAB_ACCESS_LEVEL, Action, Role
from nakama.auth import Principal, TokenStore, new_token, token_backoff
from nakama.clients.cgroups import detect as detect_limiter
from nakama.clients.firewall import LoopbackGuard
from nakama.clients.sandbox import Sandbox
from nakama.db.session import Database
from nakama.db.tables import AppViewer, Project
from nakama.errors import NakamaError, NotFound, RateLimited
from nakama.hosts import app_address
from nakama.limits import effective_limits
from nakama.logs import get_logger
from nakama.ports import Forge, Pipelines, Registry, Runtime
from nakama.quotas import check_app_start
from nakama.secret_keys import load_keys
from nakama.secretbox import SecretBox
from nakama.sessions import SessionStore
from nakama.settings import Settings
from webhook_receiver.intake import Intake, ReceiverApp, make_receiver_router
from webhook_receiver.processing import EventProcessor

log = get_logger(__name__)


class ModeParts(Protocol):
    """What only one mode has: its background work, its extra routes, its connections."""

    def start(self) -> None: ...

    def resume(self) -> None:
        """Work to pick up after a restart (runs in a background thread after :meth:`start`)."""
        ...

    def stop(self) -> None: ...

    def routers(self, tokens: TokenStore, sharing: Sharing) -> list[APIRouter]: ...


@dataclass
class LocalParts:
    """Local mode: the job runner, the app processes, the git server, and the idle check that
    puts apps to sleep."""

    settings: Settings
    db: Database
    forge: LocalForge
    runtime: LocalRuntime
    pipelines: LocalPipelines
    guard: LoopbackGuard | None = None
    # Catches up pushes whose hook did not arrive: at start-up and every reconcile_interval_s.
    reconciler: LocalReconciler | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._idle: threading.Thread | None = None
        self._reconcile: threading.Thread | None = None
        self._disk_checked = 0.0

    def start(self) -> None:
        removed = clean_partial_builds(self.pipelines.envs_dir)
        if removed:
            log.info("removed interrupted builds", count=removed)
        self.pipelines.start(
            build_workers=self.settings.job_workers,
            reload_workers=self.settings.jobs.reload_workers,
        )
        self._idle = threading.Thread(target=self._idle_loop, name="idle-check", daemon=True)
        self._idle.start()

    def resume(self) -> None:
        self.pipelines.restore_deployed()
        if self.reconciler is not None:
            self._reconcile = threading.Thread(
                target=self._reconcile_loop, args=(self.reconciler,), name="reconcile", daemon=True
            )
            self._reconcile.start()

    def _reconcile_loop(self, reconciler: LocalReconciler) -> None:
        # The first step does not wait: a hook cut off by a stop or a crash will not come now.
        wait = False
        while not self._stop.is_set():
            try:
                reconciler.step(wait=wait)
            except Exception:
                log.exception("reconcile step failed")
            wait = True
            self._stop.wait(self.settings.receiver.reconcile_interval_s)

    def stop(self) -> None:
        self._stop.set()
        self.pipelines.stop()
        self.runtime.stop_all()
        if self.guard is not None:
            self.guard.remove()

    def _idle_loop(self) -> None:
        while not self._stop.wait(self.settings.gateway.idle_check_interval_s):
            try:
                self.sleep_idle_apps()
            except Exception:
                log.exception("idle check failed")
            now = time.monotonic()
            if now - self._disk_checked >= self.settings.runtime.disk_check_interval_s:
                self._disk_checked = now
                try:
                    self.enforce_disk_limits()
                except Exception:
                    log.exception("disk check failed")

    def enforce_disk_limits(self) -> list[str]:
        """Stop every running app whose ``$DATA_DIR`` outgrew its limit."""
        with self.db.session() as s:
            names = s.scalars(select(Project.name).where(Project.status != "deleting")).all()
        return [name for name in names if self.runtime.enforce_disk_limit(name)]

    def sleep_idle_apps(self) -> list[str]:
        """Put to sleep every app idle for longer than its project's idle timeout."""
        with self.db.session() as s:
            timeouts = s.execute(
                select(Project.name, Project.idle_timeout_s).where(
                    Project.idle_timeout_s.is_not(None), Project.status != "deleting"
                )
            ).all()
        slept = []
        for name, timeout in timeouts:
            if not timeout or self.runtime.routes.idle_s(name) <= timeout:
                continue
            if self.runtime.sleep(name, idle_s=float(timeout)):  # checked again, under its lock
                slept.append(name)
        return slept

    def routers(self, tokens: TokenStore, sharing: Sharing) -> list[APIRouter]:
        def authenticate(_user: str, password: str, client: str | None) -> bool:
            return tokens.authenticate(password, client=client) is not None

        def may_develop(_user: str, password: str, project: str) -> bool:
            """Clone and push need the developer role (viewers only open the app): False for
            a non-member (as if there were no repository), Forbidden for a viewer."""
            caller = tokens.authenticate(password)
            if caller is None:
                return False
            try:
                sharing.check(project, caller, Action.develop)
            except NotFound:
                return False
            return True

        def hook_env(project: str) -> dict[str, str]:
            """What the post-receive hook needs to tell the pusher what the push will do."""
            return PushContext(
                app_url=self.runtime.app_url(project),
                envs_dir=str(self.pipelines.envs_dir),
                dependency_files=self.settings.planning.dependency_files,
                max_file_bytes=self.settings.planning.max_dependency_file_bytes,
                reload_strategy=self.settings.runtime.reload_strategy,
            ).to_env()

        return [
            make_git_router(
                repos_dir=self.forge.repos_dir,
                authenticate=authenticate,
                may_access=may_develop,
                hook_env=hook_env,
            )
        ]


@dataclass
class Adapters:
    """The ports' implementations for one mode, and what only that mode has."""

    forge: Forge
    registry: Registry
    runtime: Runtime
    pipelines: Pipelines
    parts: ModeParts
    # Brings a project's pipeline rows up to date before they are read (None: always are).
    refresh_pipelines: Callable[[str], None] | None = None
    # How app limits are enforced, in words (the API and the project page show it).
    limits_enforced_by: str = "Kubernetes: the app container's resources"
    # How apps are isolated from each other and from Nakama, in words (start-up log, UI).
    isolation: str = "Kubernetes pods (Pod Security Standard restricted)"
    # The files retention prunes besides rows (local mode: environments and pipeline logs).
    retention_files: LocalFiles | None = None


@dataclass
class Platform:
    settings: Settings
    db: Database
    tokens: TokenStore
    forge: Forge
    registry: Registry
    runtime: Runtime
    pipelines: Pipelines
    processor: EventProcessor
    projects: ProjectService
    variables: VariableService
    limits: LimitService
    parts: ModeParts
    isolation: str = ""
    retention: Retention | None = None
    notifications: NotificationService | None = None
    databases: DatabaseService | None = None

    def bootstrap_admin(self) -> str | None:
        """Make sure the admin user and an admin token exist; return the token if it was
        generated just now. A configured NAKAMA_ADMIN_TOKEN is the only bootstrap token: the
        one before a rotation (or a generated one) is revoked; tokens users made stay."""
        admin_id = self.tokens.ensure_admin_user()
        if self.settings.admin_token is not None:
            revoked = self.tokens.replace_bootstrap_token(
                self.settings.admin_token.get_secret_value(), user_id=admin_id
            )
            if revoked:
                log.info("previous admin token revoked", count=revoked)
            self.admin_token_file.unlink(missing_ok=True)  # it held a revoked token, if any
            return None
        if self.tokens.has_admin():
            return None
        token = new_token()
        self.tokens.add(token, name="admin", is_admin=True, user_id=admin_id)
        path = self.admin_token_file
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token

    @property
    def admin_token_file(self) -> Path:
        return self.settings.data_dir / "admin-token"

    def start(self) -> None:
        self.parts.start()
        self.processor.start()
        if self.retention is not None:
            self.retention.start()
        if self.notifications is not None:
            threading.Thread(target=self.notifications.run, name="notify", daemon=True).start()
        threading.Thread(target=self._resume, name="resume", daemon=True).start()

    def _resume(self) -> None:
        self.projects.finish_deletes()
        if self.databases is not None:
            self.databases.resume()
        self.parts.resume()

    def stop(self) -> None:
        if self.notifications is not None:
            self.notifications.stop()
        if self.retention is not None:
            self.retention.stop()
        self.processor.stop()
        self.parts.stop()
        self.db.dispose()


def secret_box(settings: Settings) -> SecretBox:
    """The keys of secret variables: NAKAMA_SECRETS_KEY, or the key file in the data dir."""
    keys = load_keys(settings)
    if keys.file is not None and settings.mode == "cluster":
        # The deployment's data dir is an emptyDir: a new pod would make a new key.
        log.warning(
            "secret variables are encrypted with a key in the data dir; set NAKAMA_SECRETS_KEY",
            key_file=str(keys.file),
        )
    return keys.box()


def local_adapters(settings: Settings, db: Database, secrets: SecretBox) -> Adapters:
    """Everything on this machine: git repositories, environments, processes, a job runner."""
    data = settings.data_dir
    for sub in ("git", "envs", "apps", "logs"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    forge = LocalForge(
        repos_dir=data / "git",
        base_url=settings.base_url,
        max_file_bytes=settings.planning.max_dependency_file_bytes,
        max_push_bytes=settings.planning.max_push_bytes,
    )
    forge.apply_push_limit()
    rewritten = forge.refresh_hooks()
    if rewritten:
        log.info("rewrote post-receive hooks of an earlier install", count=rewritten)
    registry = LocalRegistry(envs_dir=data / "envs")
    routes = Routes()
    sandbox = Sandbox(settings.runtime.sandbox)
    sandbox.check()  # no silent downgrade: a machine that cannot sandbox says what it lacks
    (log.info if sandbox.enabled else log.warning)(sandbox.describe())
    instance = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]
    limiter = detect_limiter(instance)
    log.info(limiter.describe())
    run = settings.runtime
    guard = LoopbackGuard(
        instance=instance,
        uids=(run.sandbox_uid_base, run.sandbox_uid_base + run.sandbox_uid_count - 1),
        ports=(run.port_range_start, run.port_range_end),
        enabled=sandbox.enabled and sandbox.as_root,
    )
    guard.install()
    (log.info if guard.active else log.warning)(guard.describe())
    runtime = LocalRuntime(
        apps_dir=data / "apps",
        forge=forge,
        supervisor=Supervisor(
            settings=settings.runtime,
            drain=lambda name, port, timeout_s: routes.drain(name, port, timeout_s=timeout_s),
            on_down=routes.clear_port,
            sandbox=sandbox,
            limiter=limiter,
        ),
        sandbox=sandbox,
        limits=lambda project: effective_limits(settings.limits, stored_limits(db, project)),
        settings=settings.runtime,
        routes=routes,
        address=lambda project: app_address(
            project, apps_domain=settings.apps_domain, base_url=settings.base_url
        ),
        # Read at every start of an app, so a restart of Nakama brings the variables back too.
        variables=lambda project: stored_environment(db, project, secrets),
        may_start=lambda project, running: check_app_start(db, settings.quotas, project, running),
        main_file=lambda project: recorded_main_file(db, project),
    )
    pipelines = LocalPipelines(
        db=db, forge=forge, runtime=runtime, settings=settings, limiter=limiter
    )
    reconciler = LocalReconciler(
        db=db,
        forge=forge,
        registry=registry,
        pipelines=pipelines,
        planning=settings.planning,
        catch_up_after_s=settings.receiver.catch_up_after_s,
    )
    parts = LocalParts(
        settings=settings,
        db=db,
        forge=forge,
        runtime=runtime,
        pipelines=pipelines,
        guard=guard,
        reconciler=reconciler,
    )
    return Adapters(
        forge=forge,
        registry=registry,
        runtime=runtime,
        pipelines=pipelines,
        parts=parts,
        limits_enforced_by=limiter.describe(),
        isolation=f"{sandbox.describe()}; {guard.describe()}",
        retention_files=LocalFiles(envs_dir=pipelines.envs_dir, log_path=pipelines.log_path),
    )


# Seconds between two reconcile steps (GitLab's pipeline statuses, missed pushes, hooks).
RECONCILE_INTERVAL_S = 10.0


@dataclass
class ClusterParts:
    """Cluster mode: builds, apps and repositories live elsewhere. A background loop reconciles
    with GitLab (:mod:`backend.cluster.reconcile`): it follows unfinished pipelines (and moves an
    app to its commit once its image is built), fails stuck ones, catches up missed pushes,
    finishes half-done deletes and notices push hooks GitLab has disabled."""

    close: Callable[[], None]
    step: Callable[[], None]
    # Run once when the loop starts: what the GitLab token cannot reach, logged.
    check: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        if self.check is not None:
            try:
                self.check()
            except Exception:
                log.exception("start-up check failed")
        while not self._stop.wait(RECONCILE_INTERVAL_S):
            try:
                self.step()
            except Exception:
                log.exception("reconcile step failed")

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.close()

    def routers(self, tokens: TokenStore, sharing: Sharing) -> list[APIRouter]:
        return []


def cluster_adapters(settings: Settings, db: Database) -> Adapters:
    """GitLab, Harbor, Kubernetes and Flux (see :mod:`backend.cluster.wiring`)."""
    # Imported here: the cluster clients are an optional extra (pip install nakama[cluster]).
    from backend.cluster.gitlab_access import log_access
    from backend.cluster.wiring import connect

    cluster = connect(
        settings,
        db,
        branch=lambda project: recorded_branch(db, project) or settings.planning.deploy_branch,
        main_file=lambda project: recorded_main_file(db, project),
    )
    # Deletes left half-done are finished by the reconciler too (the starter kit is not needed).
    deletes = ProjectService(
        sharing=Sharing(db),
        db=db,
        forge=cluster.forge,
        registry=cluster.registry,
        pipelines=cluster.pipelines,
        runtime=cluster.runtime,
        starter_kit={},
        deploy_branch=settings.planning.deploy_branch,
    )
    reconciler = cluster.reconciler(
        settings, db, interval_s=RECONCILE_INTERVAL_S, finish_delete=deletes.finish_delete
    )
    return Adapters(
        forge=cluster.forge,
        registry=cluster.registry,
        runtime=cluster.runtime,
        pipelines=cluster.pipelines,
        parts=ClusterParts(
            close=cluster.close,
            step=reconciler.step,
            check=functools.partial(log_access, cluster.forge.client, settings),
        ),
        refresh_pipelines=cluster.pipelines.refresh,
    )


def build_platform(settings: Settings) -> Platform:
    """The platform for ``settings.mode``: the one place that chooses between the modes."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    secrets = secret_box(settings)
    db = Database(settings.db_url)
    try:
        db.migrate(secrets=secrets)
        # A lost or wrong key stops the start: secrets under a new key would mix with old ones.
        check_secrets(db, secrets)
    except BaseException:
        db.dispose()
        raise
    if settings.mode == "cluster":
        adapters = cluster_adapters(settings, db)
    else:
        adapters = local_adapters(settings, db, secrets)
    processor = EventProcessor(
        db=db,
        forge=adapters.forge,
        registry=adapters.registry,
        pipelines=adapters.pipelines,
        settings=settings.planning,
    )
    tokens = TokenStore(db, failures=token_backoff(settings.web))
    sharing = Sharing(
        db,
        on_member_change=member_sync(adapters.forge, tokens),
        on_visibility_change=adapters.runtime.set_visibility,
    )
    variables = VariableService(db, adapters.runtime, secrets)
    databases = DatabaseService(db, secrets, settings.addons, variables)
    projects = ProjectService(
        sharing=sharing,
        drop_database=databases.drop_for_project,
        db=db,
        forge=adapters.forge,
        registry=adapters.registry,
        pipelines=adapters.pipelines,
        runtime=adapters.runtime,
        starter_kit=read_starter_kit(settings.starter_kit_dir),
        deploy_branch=settings.planning.deploy_branch,
        refresh_pipelines=adapters.refresh_pipelines,
        quotas=settings.quotas,
        dependency_files=settings.planning.dependency_files,
        builds=cluster_build_policy(settings.flux)
        if settings.mode == "cluster"
        else local_build_policy(settings.builder),
    )
    return Platform(
        settings=settings,
        db=db,
        tokens=tokens,
        forge=adapters.forge,
        registry=adapters.registry,
        runtime=adapters.runtime,
        pipelines=adapters.pipelines,
        processor=processor,
        projects=projects,
        variables=variables,
        limits=LimitService(
            db, adapters.runtime, settings.limits, enforced_by=adapters.limits_enforced_by
        ),
        parts=adapters.parts,
        isolation=adapters.isolation,
        retention=Retention(db, settings.retention, files=adapters.retention_files),
        notifications=NotificationService(
            db,
            secrets,
            settings.notifications,
            app_url=adapters.runtime.app_url,
            app_status=adapters.runtime.status,
        ),
        databases=databases,
    )


def member_sync(forge: Forge, tokens: TokenStore) -> MemberChanged:
    """Keeps the forge's members in step with a project's roles (cluster mode: GitLab access
    levels, for users who sign in with GitLab; owner Maintainer, developer Developer, viewer
    none). Runs before Nakama stores the change, so a refusal stores nothing."""

    def sync(project: str, username: str, role: Role | None) -> None:
        gitlab_user = tokens.gitlab_username_for(username)
        if gitlab_user is None:
            return  # not linked to a forge account: nothing there to change
        level = GITLAB_ACCESS_LEVEL[role] if role is not None else None
        forge.set_member_access(project, gitlab_user, level)

    return sync


def create_app(platform: Platform) -> Gateway:
    """The ASGI app on Nakama's one port: the app gateway in front, then the webhook
    receiver's hot path, then the API, the web UI and (local mode) git."""
    settings = platform.settings
    sessions = SessionStore(platform.db, platform.tokens, max_age_s=settings.web.session_max_age_s)
    viewers = Viewers(tokens=platform.tokens, sessions=sessions, sharing=platform.projects.sharing)
    registry = CollectorRegistry(auto_describe=True)
    metrics = GatewayMetrics(registry, record_viewer=lambda *key: record_viewer(platform.db, *key))
    # Local mode forwards to the app processes; in cluster mode each app's Ingress does.
    runtime = platform.parts.runtime if isinstance(platform.parts, LocalParts) else None
    upstream = Upstream(settings.gateway) if runtime is not None else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        platform.start()
        # Objects made at start-up live for good: keep them out of the garbage collector's
        # full passes, which otherwise stall request handling for 50-100 ms now and then.
        gc.freeze()
        # A proxied request makes a few hundred short-lived objects: with the default threshold
        # (700) the young generation is collected every couple of requests. Measured with
        # benchmarks/gateway.py: the p99 the gateway adds went from 13-17 ms to 9-10 ms.
        gc.set_threshold(20_000, 50, 100)
        log.info("nakama is up", url=platform.settings.base_url)
        try:
            yield
        finally:
            intake.close()
            platform.stop()
            if upstream is not None:
                await upstream.close()

    app = FastAPI(
        title="Nakama",
        version=__version__,
        description="Push-to-deploy for Streamlit and other Python web apps.",
        lifespan=lifespan,
        # No OpenTelemetry here: its per-request checks cost a third of the webhook intake's time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's pages load Swagger UI and ReDoc from CDNs; install_docs serves /docs itself.
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)

    @app.exception_handler(NakamaError)
    async def nakama_error(_request: Request, exc: NakamaError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            log.error("unclassified error", error_type=type(exc).__name__)
            return JSONResponse({"detail": "internal error"}, status_code=500)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    intake = Intake(
        db=platform.db, settings=platform.settings.receiver, on_stored=platform.processor.notify
    )
    app.include_router(make_receiver_router(intake))
    app.include_router(
        make_api_router(
            projects=platform.projects,
            tokens=platform.tokens,
            variables=platform.variables,
            limits=platform.limits,
            sessions=sessions,
            users=UserRemoval(
                db=platform.db,
                tokens=platform.tokens,
                sessions=sessions,
                projects=platform.projects,
            ),
            log_read_bytes=settings.logs.pipeline_log_read_bytes,
            notifications=platform.notifications,
            databases=platform.databases,
        )
    )
    for router in platform.parts.routers(platform.tokens, platform.projects.sharing):
        app.include_router(router)
    install_metrics(
        app, registry=registry, tokens=platform.tokens, settings=settings, db=platform.db
    )
    web_options = gitlab_sign_in_options(settings, platform.tokens)

    def gateway_routes(auth: WebAuth, render: Renderer) -> APIRouter:
        return make_gateway_router(
            settings=settings,
            viewers=viewers,
            sessions=sessions,
            may_open=platform.projects.sharing.may_open,
            user=auth.user,
            render=render,
        )

    web_options["extra_routers"] = [*web_options.get("extra_routers", []), gateway_routes]
    install_web(
        app,
        projects=platform.projects,
        variables=platform.variables,
        limits=platform.limits,
        isolation=platform.isolation,
        tokens=platform.tokens,
        db=platform.db,
        settings=settings,
        sessions=sessions,
        notifications=platform.notifications,
        databases=platform.databases,
        **web_options,
    )
    return Gateway(
        settings=settings,
        viewers=viewers,
        sessions=sessions,
        fallback=ReceiverApp(intake, fallback=app),
        metrics=metrics,
        upstream=upstream,
        routes=runtime.routes if runtime is not None else None,
        processes=runtime,
    )


def record_viewer(db: Database, app: str, user_id: int, day: date) -> None:
    """Store that ``user_id`` opened ``app`` on ``day`` (once: a repeat is ignored)."""
    try:
        with db.session() as s:
            s.add(AppViewer(project=app, user_id=user_id, day=day))
    except IntegrityError:
        pass  # seen already (by another replica or before a restart)


def gitlab_sign_in_options(settings: Settings, tokens: TokenStore) -> dict[str, Any]:
    """install_web's options for "Sign in with GitLab": in cluster mode with a GitLab OAuth
    application configured, the sign-in routes, and a project made from the web gets its GitLab
    user as the repository's Maintainer. Otherwise none: the local sign-in only."""
    web = settings.web
    if settings.mode != "cluster" or not (
        web.gitlab_oauth_client_id and web.gitlab_oauth_client_secret
    ):
        return {}
    # Imported here: authlib comes with the cluster extra (pip install nakama[cluster]).
    from backend.web.gitlab_signin import make_gitlab_signin_router

    def router(auth: WebAuth, render: Renderer) -> APIRouter:
        return make_gitlab_signin_router(auth, render, settings=settings, tokens=tokens)

    def maintainer_of(user: Principal) -> str | None:
        return tokens.gitlab_username_of(user.user_id) if user.user_id is not None else None

    return {"gitlab_sign_in": True, "extra_routers": [router], "maintainer_of": maintainer_of}
