"""Settings for one Nakama process, read from the environment (prefix ``NAKAMA_``).

Built once in ``main()`` or the app factory and passed down; nothing reads it at import time.
Nested parts use ``__`` in variable names, e.g. ``NAKAMA_RUNTIME__PORT_RANGE_START=9000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DEPENDENCY_FILES: tuple[str, ...] = (
    "requirements*.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "packages.txt",
    "Dockerfile",
    ".python-version",
    "nakama.toml",  # its run command is baked into the image in cluster mode
)


# Characters an operator-chosen NAKAMA_ADMIN_TOKEN needs at least: 32 random characters are far
# beyond guessing, even at the API's full speed (a generated token has 43).
ADMIN_TOKEN_MIN = 32


def _source_root() -> Path:
    return Path(__file__).resolve().parent.parent


class ReceiverSettings(BaseModel):
    """The webhook receiver's limits."""

    # GitLab caps bodies at 25 MB; a push hook is a few KB even with 20 commits, so 1 MiB is ample
    # and keeps a hostile client from filling memory. Local mode's hook leaves out the commits'
    # file lists of a bigger push (the planner asks git for the changes anyway).
    max_body_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    # Levels of nesting a hook body may have. GitLab's push hook has 4 (commits → commit →
    # author); 32 leaves room for added fields and stays far below the ~1000 levels where
    # Python's json parser gives up with a RecursionError. Deeper bodies get a 400.
    max_json_depth: int = Field(default=32, ge=4, le=500)
    # Seconds between two checks of every project's deploy branch against what is deployed, to
    # catch up a push whose hook never arrived (Nakama stopped mid-push, a delivery failed).
    # One check costs a `git rev-parse` and two indexed queries per project: 60 s keeps that
    # under 2 % of a core for a thousand projects. Local mode; cluster mode has its own loop.
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    # Seconds a branch head must stay unhandled before the timer catches it up, so a hook still
    # on its way (the post-receive hook waits up to 10 s per delivery) does not race it. The
    # check at start-up does not wait: no hook is under way before Nakama serves git.
    catch_up_after_s: float = Field(default=30.0, ge=0)


class PlanningSettings(BaseModel):
    """What the push planner treats as a dependency change."""

    dependency_files: tuple[str, ...] = DEFAULT_DEPENDENCY_FILES
    # The branch whose pushes deploy; other branches are ignored.
    deploy_branch: str = "main"
    # Bytes a dependency file may have: the planner reads every one into memory at each push.
    # A requirements file or lock file is a few KiB (a large uv.lock some hundred); a larger
    # one is not read (its blob id stands in for its content in the dependency hash) and its
    # build fails, naming the file.
    max_dependency_file_bytes: int = 1024 * 1024
    # Bytes one push may send (git's receive.maxInputSize, local mode): an app with its sample
    # data fits; more belongs in $DATA_DIR. Packed size: a file of zeros packs to far less.
    max_push_bytes: int = 256 * 1024 * 1024
    # Threads that plan pushes. Each takes one project's events at a time, in order, so a
    # project whose forge calls are slow holds one thread, not everyone's pushes; planning a
    # push takes milliseconds, so a few serve many users.
    event_workers: int = 4


class RuntimeSettings(BaseModel):
    """Local-mode app processes."""

    # Loopback ports handed to app processes: each start of an app takes a free one, so a new
    # version starts beside the old one and the gateway switches over without a gap.
    port_range_start: int = 8600
    port_range_end: int = 8999
    # Seconds an app may take from start to answering HTTP before it counts as unhealthy.
    # Streamlit needs 2-5 s on a small machine; a heavy app more.
    health_timeout_s: float = 60.0
    # Seconds between health probes while an app starts.
    health_interval_s: float = 0.05
    # Back-off after a crash: first delay and cap, in seconds.
    restart_backoff_initial_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    # Seconds to wait after SIGTERM before SIGKILL.
    stop_timeout_s: float = 10.0
    # Seconds a replaced app process may finish the requests it has before it is stopped; long
    # enough for a slow page, short enough that a deploy does not keep two copies for long.
    drain_timeout_s: float = 30.0
    # How a code-only push reaches a running app. "live" (the default; Streamlit apps only) runs
    # the app in a stable copy of the code and, when a push changed the main script alone,
    # updates the copy in place so Streamlit reruns it without a restart: measured, an open tab
    # shows the change 0.6 s after the push and a new visitor gets it at once, against 5-8 s with
    # a restart (docs/live-reload.md). Any other push, and any app that is not Streamlit, is
    # restarted. "restart" always stops the process and starts it on the new worktree.
    reload_strategy: Literal["restart", "live"] = "live"
    # Apps and builds run in a bubblewrap sandbox (their own mount and PID namespaces, only
    # their own files in view; docs/sandbox.md). "off" runs them as Nakama's own user with the
    # whole machine in view: only for a single-user machine; Nakama says so at start-up.
    sandbox: Literal["bwrap", "off"] = "bwrap"
    # When Nakama runs as root each app runs as its own uid from this range (and each
    # project's builds as another): no app can signal, trace or read another's processes.
    sandbox_uid_base: int = 400_000
    sandbox_uid_count: int = 65_536
    # Seconds between checks of every app's $DATA_DIR against its disk limit (a single file
    # can never outgrow it: an rlimit stops that write at once).
    disk_check_interval_s: float = 60.0


class LimitsSettings(BaseModel):
    """Resources of one app, unless an admin set others for its project (nakama.limits)."""

    memory_mib: int = 1024  # Streamlit with pandas starts near 150 MiB; dataframes grow fast
    cpu: float = 1.0  # cores
    processes: int = 256  # threads count too
    disk_mib: int = 2048  # $DATA_DIR
    log_mib: int = 10  # of the app's log kept (the newest); older output is rotated away
    replicas: int = 1  # cluster mode: pods per app


class BuilderSettings(BaseModel):
    """Local-mode environment builds."""

    # Seconds a single environment build may take before it is failed.
    build_timeout_s: float = 1800.0
    # uv's cache; shared by all builds so a rebuild with known packages takes seconds.
    uv_cache_dir: Path | None = None
    # Python interpreter for app environments; None means the one running Nakama.
    python: str | None = None


class GitLabSettings(BaseModel):
    """Cluster mode: the GitLab instance that holds projects and runs their pipelines."""

    url: str = "https://gitlab.example.com"
    token: SecretStr | None = None  # an access token with api scope on the group
    group: str = "nakama-apps"  # full path of the group that holds the app projects
    # Trigger token and project of the image-builder and code-reloader pipelines.
    pipelines_project: str = "nakama/pipelines"
    trigger_token: SecretStr | None = None
    verify_ssl: bool = True
    # Seconds for one HTTP call; GitLab answers API calls well within this.
    timeout_s: float = 30.0
    # Attempts for one call on 429, 5xx and timeouts, with exponential back-off between them.
    max_attempts: int = 5


class HarborSettings(BaseModel):
    """Cluster mode: the Harbor registry that holds app images."""

    url: str = "https://harbor.example.com"
    username: str = "admin"
    password: SecretStr | None = None
    project: str = "nakama-apps"  # one Harbor project; one repository per app inside it
    # Harbor's system setting robot_name_prefix: a project robot is <prefix><project>+<name>.
    robot_name_prefix: str = "robot$"
    # Builds kept per app by the tag-retention policy: the rollback window.
    keep_builds: int = 10
    verify_ssl: bool = True
    timeout_s: float = 30.0
    max_attempts: int = 5


class KubernetesSettings(BaseModel):
    """Cluster mode: where apps run."""

    namespace: str = "nakama-apps"
    # How a code-only push restarts an app: through the code-reloader pipeline in GitLab (as in
    # the original design) or straight through the Kubernetes API.
    reload_via: Literal["gitlab-pipeline", "kubernetes"] = "kubernetes"
    # How the restart is done: the pod-template restartedAt patch, or deleting the pods.
    restart_method: Literal["patch", "delete-pods"] = "patch"


class FluxSettings(BaseModel):
    """Cluster mode: the GitOps repository Flux applies, and how app manifests look."""

    gitops_project: str = "nakama/gitops"
    gitops_branch: str = "main"
    apps_path: str = "apps"  # folder of the GitOps repository with one sub-folder per app
    app_domain: str = "apps.example.com"  # apps are served at https://<name>.<app_domain>
    ingress_class: str | None = None
    # Image that runs `nakama reload sync` in each app's init container.
    reloader_image: str = "harbor.example.com/nakama/nakama:latest"
    # Base image for apps without a Dockerfile.
    base_image: str = "python:3.11-slim"
    # Seconds between Flux scans of the registry (the fallback when no Receiver ping arrives).
    image_scan_interval_s: int = 60
    # Which controller serves app Ingresses, for how private and internal apps are guarded by
    # Nakama's verify endpoint (flux/gateway.py): ingress-nginx's auth-url annotations,
    # Traefik's ForwardAuth Middleware, or "none" (nothing guards them). nginx: the usual one.
    ingress_controller: Literal["nginx", "traefik", "none"] = "nginx"
    # URL (scheme, host, port) at which the Ingress controller reaches Nakama inside the cluster:
    # verify requests go to <this>/gateway/verify, and the Service nakama-gateway is an
    # ExternalName for its host. The default is the Service of deploy/kustomize (nakama/nakama:80).
    nakama_internal_url: str = "http://nakama.nakama.svc.cluster.local"
    # URL at which browsers reach Nakama (NAKAMA_PUBLIC_URL; set both alike): the sign-in of
    # guarded apps is <this>/gateway/sign-in. A field here as manifests see FluxSettings only.
    nakama_public_url: str = "https://nakama.example.com"
    # cert-manager ClusterIssuer for per-app certificates (Secret <app>-tls); None: no
    # cert-manager, apps use GitOpsLayout.tls_secret or plain HTTP, as not every cluster has it.
    cert_issuer: str | None = None


class GatewaySettings(BaseModel):
    """The app gateway: every app at ``<name>.<apps_domain>`` on Nakama's own port."""

    # Seconds a request that is not a page waits for a sleeping app to wake (a page gets a
    # "waking up" page at once, which reloads itself). Streamlit starts in 2-5 s.
    wake_wait_s: float = 30.0
    # Seconds between two looks for apps idle past their project's idle_timeout_s.
    idle_check_interval_s: float = 5.0
    # Seconds an app may take to send a response's headers; the body may stream for as long
    # as it likes (server-sent events, downloads).
    response_timeout_s: float = 300.0
    # Seconds a one-time sign-in code is good for: it is used at once by the browser's redirect.
    sign_in_code_ttl_s: float = 60.0
    # Connections kept open to one app: bounds what one busy app holds of Nakama's sockets.
    max_connections_per_app: int = 100


class WebSettings(BaseModel):
    """The web UI's sign-in."""

    # Key that signs session cookies; None: one is made at first start and kept in
    # <data_dir>/session-secret. Set it when several replicas serve the UI.
    session_secret: SecretStr | None = None
    # Seconds a sign-in lasts: a working day, so nobody signs in twice a day.
    session_max_age_s: int = 12 * 3600
    # Cluster mode: the GitLab OAuth application users sign in with (scopes: read_user). Its
    # redirect URI is <public_url>/login/gitlab/callback.
    gitlab_oauth_client_id: str | None = None
    gitlab_oauth_client_secret: SecretStr | None = None
    # Addresses of the reverse proxies in front of Nakama whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (comma-separated IPs or networks, e.g. "127.0.0.1" for an
    # nginx on this machine). Empty: none, so the client address is the connection's; trusting
    # a proxy that is not there lets anyone name their own address and dodge the limits below.
    trusted_proxies: str = ""
    # Wrong passwords (or tokens) for one user from one client address before each further
    # sign-in try from there must wait: a typo or two, then the waits double from
    # signin_backoff_initial_s. Keyed on the address too, so strangers cannot lock a user out.
    signin_failures_per_user: int = 5
    # Wrong sign-ins from one client address, for any users, before it must wait: enough for a
    # team behind one NAT, few for a guesser trying many names.
    signin_failures_per_address: int = 30
    # Wrong API tokens (bearer, or git's basic auth) from one client address before it must
    # wait (429 with Retry-After): a script with an old token fails a few times, a guesser stops.
    token_failures_per_address: int = 20
    # Seconds of the first wait; each next failure doubles it, up to signin_backoff_max_s.
    # A quiet address is forgotten after signin_backoff_max_s.
    signin_backoff_initial_s: float = 1.0
    # The longest wait: a quarter of an hour, so a guesser gets about 4 tries an hour and a
    # user who forgot a password is not kept out for long.
    signin_backoff_max_s: float = 900.0


class LogSettings(BaseModel):
    """Pipeline logs: how much is kept and read at once; log streams one user may hold."""

    # Bytes a pipeline log may reach: a build prints a few hundred KiB, and one that prints
    # gigabytes must not fill the disk. Past it the log says so, drops the output and keeps
    # only the last lines of the pipeline (its error and status).
    pipeline_log_max_bytes: int = 10 * 1024 * 1024
    # Bytes one read of a pipeline log returns at most (the API's max_bytes, a stream's first
    # look): a whole normal log, and a bound on what one request holds in memory.
    pipeline_log_read_bytes: int = 1024 * 1024
    # Bytes of log one server-sent event carries at most; more is sent in several.
    stream_event_bytes: int = 64 * 1024
    # Log streams (the pipeline page's live log) one user may hold open at once: a few tabs.
    # The next one gets a 429; each stream looks at its log every half second.
    streams_per_user: int = 10


class JobSettings(BaseModel):
    """Local mode: who waits for whom among builds and reloads (backend.local.jobs)."""

    # Worker threads for reloads only (a job whose environment exists: code-only pushes,
    # rollbacks and restarts onto a built environment): a reload takes a second and must never
    # wait behind a build of half an hour. Two, so one slow app start does not hold up the next.
    # The build workers (Settings.job_workers) take reloads too when they have no build.
    reload_workers: int = Field(default=2, ge=1)
    # Builds one user's projects may run at once. One: with the default two build workers,
    # another user's build always finds a worker while one user builds many projects.
    builds_per_user: int = Field(default=1, ge=1)
    # Apps started at once when Nakama starts again (each a code sync and a sandboxed process's
    # start, mostly waiting on git and the kernel): one after another, 20 apps took 4 s.
    restore_workers: int = Field(default=6, ge=1)


class NotificationSettings(BaseModel):
    """Deploy notifications (backend.notifications): where they may go and how hard to try."""

    # Targets on loopback, private or link-local addresses are refused: any user names the
    # URL, and Nakama's own network is not theirs to probe (GitLab's webhook SSRF advisories).
    # An operator whose chat or CI server lives on the private network allows them here.
    allow_private_targets: bool = False
    # Seconds between two looks for finished pipelines whose targets were not told yet.
    interval_s: float = Field(default=1.0, gt=0)
    # Tries of one delivery before it is logged as failed and dropped, the waits between them
    # doubling from backoff_initial_s up to backoff_max_s seconds: with the defaults a target
    # down for most of a minute still gets it.
    attempts: int = Field(default=5, ge=1)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # Seconds one try may take (connect and answer).
    timeout_s: float = Field(default=10.0, gt=0)
    # Targets one project may have.
    targets_per_project: int = Field(default=10, ge=1)
    # An app restarted this many times after stopping on its own, and down now, is crashing
    # repeatedly: every target of its project is told once, and again only after a fresh start
    # (a deploy, a restart, a new pod) counted that many restarts again.
    crash_restarts: int = Field(default=3, ge=1)
    # Seconds between two looks at the apps of projects with targets.
    crash_check_s: float = Field(default=30.0, gt=0)


class AddonSettings(BaseModel):
    """Services Nakama makes for apps on request (backend.databases): a PostgreSQL database."""

    # An admin DSN of the PostgreSQL server that holds the apps' databases, e.g.
    # postgresql://nakama_admin:PASSWORD@db.internal:5432/postgres: a superuser, or a role with
    # CREATEROLE and CREATEDB. None: projects cannot have a database (the UI says what to set).
    postgres_url: SecretStr | None = None
    # The host[:port] the apps reach that server at, where it is not the admin DSN's (in a
    # cluster, the server's Service name). None: the admin DSN's.
    postgres_app_host: str | None = None
    # What the names of Nakama's roles and databases on that server start with: two Nakamas
    # sharing one server need different ones. Lower-case letters, digits and '_'.
    postgres_prefix: str = Field(default="nakama", pattern=r"^[a-z][a-z0-9_]{0,11}$")
    # Connections one app's role may hold at once (CONNECTION LIMIT): one app cannot take the
    # server's max_connections from the others.
    postgres_connection_limit: int = Field(default=20, ge=1)


class QuotaSettings(BaseModel):
    """What one user may hold (admins are not bounded). A request past a quota gets a 409 that
    names the quota, what the user holds and its setting (nakama.quotas)."""

    # Projects one user owns (both modes). Each is a repository, an app process of 60-100 MB
    # and its environments: 20 is plenty for one person's dashboards, and 20 users of 20 fill
    # the default port range (400) only when every app runs.
    projects_per_user: int = 20
    # Apps of one user running at once, local mode (each holds a port of the range and memory):
    # with 20 a user cannot take the 400 ports of the default range alone (review finding M4).
    running_apps_per_user: int = 20
    # Built environments of one user's projects kept on disk, local mode (their own and the
    # shared ones they use; checked before a build): one or two per project of 20, plus what
    # the rollback window of each holds until retention prunes it.
    environments_per_user: int = 40
    # Disk of one user's projects in MiB, local mode (checked before a build): environments,
    # repositories, code, $DATA_DIR and logs. 20 GiB: twenty projects with a pandas-sized
    # environment (300-500 MiB) and their data; a disk is then shared by tens of users.
    disk_mib_per_user: int = 20 * 1024


class RetentionSettings(BaseModel):
    """What is pruned, and when (backend.retention). A row goes when it is older than its days
    OR beyond the newest count kept per project, except what is still needed: pending events
    and pipelines, running pipelines, the deployed pipeline and the rollback window."""

    # Seconds between two prunes (and one at start-up). Hourly: the counts below bound what a
    # burst of pushes can leave between two runs to about an hour's worth.
    interval_s: float = 3600.0
    # Processed webhook events (done, ignored, failed) are kept this many days: enough to see
    # why last week's push did (not) deploy. A redelivery (GitLab retries within minutes) is
    # recognised by its stored key only as long as the event is kept.
    events_days: float = 7.0
    # ... and at most this many per project (the newest): a body is up to 1 MiB, so one
    # project's events stay within about 1 GiB even under a flood (review finding L2).
    events_per_project: int = 1000
    # Push plans (one decision per push, shared by its two hooks, which arrive within seconds)
    # are kept this many days; a late hook after that is planned again, and a commit already
    # deployed or being deployed is not deployed twice.
    push_plans_days: float = 7.0
    # ... and at most this many per project: a plan is a few hundred bytes, and 1000 is hours
    # of pushing even for a busy project.
    push_plans_per_project: int = 1000
    # Finished pipelines (and their logs) are kept this many days, and at most this many per
    # project (the newest), for the pipelines page and its logs.
    pipelines_days: float = 30.0
    pipelines_per_project: int = 200
    # Successful pipelines of distinct commits kept whatever their age, besides the deployed
    # one: the rollback targets (and their environments). 10 covers "it broke in the last few
    # deploys"; the API lists at most 50.
    rollback_window: int = 10
    # Environments no project needs (not deployed, not in a rollback window, not wanted by a
    # pending or running pipeline) are removed once unused this many days, local mode: a
    # dependency change reverted within the week still finds its environment built.
    environments_days: float = 7.0


class Settings(BaseSettings):
    """One Nakama process's settings."""

    model_config = SettingsConfigDict(
        env_prefix="NAKAMA_",
        env_nested_delimiter="__",
        extra="ignore",
        # A refused value is never repeated in the error: it may be a secret.
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".nakama")
    host: str = "127.0.0.1"
    port: int = 8000
    # URL at which apps, hooks and users reach this server; defaults to http://host:port.
    public_url: str | None = None
    # Apps are served at <name>.<apps_domain> on Nakama's port (local mode). Browsers and curl
    # resolve *.localhost to the loopback themselves, so the default needs no DNS; a team server
    # uses a wildcard DNS name pointing at it.
    apps_domain: str = "localhost"
    # SQLAlchemy URL; defaults to SQLite in the data dir.
    database_url: str | None = None
    # The bootstrap admin's API token (at least ADMIN_TOKEN_MIN characters); None: one is made
    # at first start and kept in <data_dir>/admin-token. Changing it revokes the previous one.
    admin_token: SecretStr | None = None
    # Keys that encrypt secret variables in the database (Fernet, comma-separated, newest
    # first); None: one is made at first start and kept in <data_dir>/secrets.key (0600).
    # Set it when the data dir is scratch (cluster mode), or the secrets are lost with it.
    secrets_key: SecretStr | None = None
    starter_kit_dir: Path = Field(default_factory=lambda: _source_root() / "app_starter_kit")
    log_format: str = "console"  # "console" or "json"
    log_level: str = "INFO"
    # Worker threads for builds (local mode; reloads have their own, jobs.reload_workers): how
    # many projects may build at once, each at most jobs.builds_per_user per user. Two: a build
    # is CPU- and network-bound, and a small server has few cores. The name is kept from when
    # these threads ran reloads too.
    job_workers: int = Field(default=2, ge=1)

    # /metrics without the admin token, for a Prometheus inside a trusted network.
    metrics_public: bool = False

    # "local": everything on this machine; "cluster": GitLab, Harbor, Kubernetes and Flux.
    mode: Literal["local", "cluster"] = "local"

    receiver: ReceiverSettings = ReceiverSettings()
    planning: PlanningSettings = PlanningSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    builder: BuilderSettings = BuilderSettings()
    gitlab: GitLabSettings = GitLabSettings()
    harbor: HarborSettings = HarborSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    flux: FluxSettings = FluxSettings()
    web: WebSettings = WebSettings()
    gateway: GatewaySettings = GatewaySettings()
    limits: LimitsSettings = LimitsSettings()
    logs: LogSettings = LogSettings()
    jobs: JobSettings = JobSettings()
    quotas: QuotaSettings = QuotaSettings()
    retention: RetentionSettings = RetentionSettings()
    notifications: NotificationSettings = NotificationSettings()
    addons: AddonSettings = AddonSettings()

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        # It unlocks everything and is typed by an operator: a short one could be guessed.
        if token is not None and len(token.get_secret_value()) < ADMIN_TOKEN_MIN:
            raise ValueError(
                f"NAKAMA_ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN} characters long "
                "(e.g. the output of `openssl rand -hex 32`); unset it and one is generated"
            )
        return token

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")

    @property
    def app_domain(self) -> str:
        """The domain under which apps have their addresses, in this mode."""
        return self.flux.app_domain if self.mode == "cluster" else self.apps_domain

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'nakama.db'}"
