"""Deploy notifications (issue 14): a project's targets, and the loop that tells them when a
pipeline fails or, if they asked, when a deploy went live. Both modes: it reads the pipelines
table, which both record into.

A finished pipeline is marked ``notified_at`` when its deliveries are handed to the senders, so
a restart never repeats one that was handed over (one in flight when Nakama stops is lost; the
``X-Nakama-Delivery`` id is the same on every try of one delivery, for receivers that dedupe).
Each delivery is tried ``notifications.attempts`` times with exponential back-off (tenacity) on
a connection error, a 429 or a 5xx; any other answer ends it. Redirects are not followed, and
the target's host is resolved and checked again before each try (a name may change what it
points at after it was accepted).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from nakama import __version__
from nakama.db.session import Database
from nakama.db.tables import NotificationTarget, Pipeline, Project, as_utc, utcnow
from nakama.errors import Conflict, InvalidInput, NotFound
from nakama.logs import get_logger
from nakama.notify import (
    ALLOW_SETTING,
    CRASH_EVENT,
    DELIVERY_HEADER,
    EVENT_HEADER,
    KINDS,
    SIGNATURE_HEADER,
    CrashLoop,
    PipelineEnd,
    crash_bodies,
    crash_looping,
    event_of,
    private_address,
    signature,
    slack_body,
    url_problem,
    wants,
    webhook_body,
)
from nakama.ports import AppStatus
from nakama.secretbox import SecretBox
from nakama.settings import NotificationSettings

log = get_logger(__name__)
_BATCH = 50  # finished pipelines looked at per step
_SENDERS = 8  # deliveries in flight at once (one slow target holds one of them)


class TargetPublic(BaseModel):
    """A target as the API shows it: the URL's scheme and host only (the rest may be its
    secret: a Slack webhook's path is)."""

    id: int
    kind: str
    url: str
    on_deploy: bool


class TargetCreated(TargetPublic):
    # The webhook kind's signing secret, shown this once (None for slack).
    secret: str | None = None


class _Retry(Exception):
    """An answer worth another try (429, 5xx)."""


Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidInput(f"the target's host {host!r} does not resolve: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


class NotificationService:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        settings: NotificationSettings,
        *,
        app_url: Callable[[str], str | None],
        app_status: Callable[[str], AppStatus] | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        """``app_status`` (the runtime's): for crash-loop notifications (None: none)."""
        self._app_status = app_status
        self._crashing: set[str] = set()  # projects whose targets were told of a crash loop
        self._db = db
        self._box = box
        self._settings = settings
        self._app_url = app_url
        self._resolve = resolver
        self._senders = ThreadPoolExecutor(_SENDERS, thread_name_prefix="notify")
        self._stop = threading.Event()

    # --- targets ---------------------------------------------------------------------------
    def check_url(self, url: str) -> None:
        """InvalidInput unless ``url`` may be a target (see :mod:`nakama.notify`)."""
        problem = url_problem(url)
        if problem is not None:
            raise InvalidInput(f"target not added: {problem}")
        refused = self._refused_host(url)
        if refused is not None:
            host, found = refused
            raise InvalidInput(
                f"target not added: {host!r} is a loopback, private or link-local address"
                f" ({found}); the operator may allow such targets ({ALLOW_SETTING}=true)"
            )

    def _refused_host(self, url: str) -> tuple[str, str] | None:
        """(host, the non-public address it resolves to) unless such targets are allowed or
        every address is public; asked when a target is added and before each try."""
        if self._settings.allow_private_targets:
            return None
        host = urlsplit(url).hostname or ""
        found = private_address(self._resolve(host))
        return (host, found) if found is not None else None

    def add(self, project: str, *, kind: str, url: str, on_deploy: bool) -> TargetCreated:
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
        self.check_url(url)
        secret = secrets.token_urlsafe(32) if kind == "webhook" else None
        with self._db.session() as s:
            count = s.scalar(select(func.count()).where(NotificationTarget.project == project))
            most = self._settings.targets_per_project
            if (count or 0) >= most:
                raise Conflict(
                    f"project {project!r} has {most} notification targets, the most one may"
                    " (NAKAMA_NOTIFICATIONS__TARGETS_PER_PROJECT); remove one first"
                )
            row = NotificationTarget(
                project=project,
                kind=kind,
                url=self._box.encrypt(url),
                secret=self._box.encrypt(secret) if secret is not None else None,
                on_deploy=on_deploy,
            )
            s.add(row)
            s.flush()
            target_id = row.id
        log.info("notification target added", project=project, target=target_id, kind=kind)
        return TargetCreated(
            id=target_id, kind=kind, url=shown_url(url), on_deploy=on_deploy, secret=secret
        )

    def list(self, project: str) -> list[TargetPublic]:
        with self._db.read() as s:
            rows = s.scalars(
                select(NotificationTarget)
                .where(NotificationTarget.project == project)
                .order_by(NotificationTarget.id)
            ).all()
        return [
            TargetPublic(
                id=r.id,
                kind=r.kind,
                url=shown_url(self._box.decrypt(r.url, what="a notification URL")),
                on_deploy=r.on_deploy,
            )
            for r in rows
        ]

    def remove(self, project: str, target_id: int) -> None:
        with self._db.session() as s:
            done = s.execute(
                delete(NotificationTarget).where(
                    NotificationTarget.project == project, NotificationTarget.id == target_id
                )
            )
        if getattr(done, "rowcount", 0) != 1:
            raise NotFound(f"notification target {target_id} of project {project!r} not found")
        log.info("notification target removed", project=project, target=target_id)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Tell targets of finished pipelines until :meth:`stop` (a thread's body)."""
        looked = time.monotonic()
        while not self._stop.wait(self._settings.interval_s):
            try:
                self.step()
                if time.monotonic() - looked >= self._settings.crash_check_s:
                    looked = time.monotonic()
                    self.crash_step()
            except Exception:  # a bad step must not end the loop
                log.exception("notification step failed")

    def stop(self) -> None:
        self._stop.set()
        self._senders.shutdown(wait=False, cancel_futures=True)

    def step(self) -> int:
        """Hand the deliveries of finished, untold pipelines to the senders; how many."""
        with self._db.session() as s:
            rows = s.scalars(
                select(Pipeline)
                .where(Pipeline.finished_at.is_not(None), Pipeline.notified_at.is_(None))
                .order_by(Pipeline.id)
                .limit(_BATCH)
            ).all()
            if not rows:
                return 0
            projects = {r.project for r in rows}
            targets = s.scalars(
                select(NotificationTarget).where(NotificationTarget.project.in_(projects))
            ).all()
            live = set(s.scalars(select(Project.name).where(Project.name.in_(projects))).all())
            s.execute(
                update(Pipeline)
                .where(Pipeline.id.in_([r.id for r in rows]))
                .values(notified_at=utcnow())
            )
        wanted: list[tuple[PipelineEnd, str, NotificationTarget]] = []
        for r in rows:
            end = PipelineEnd(
                pipeline_id=r.id,
                project=r.project,
                kind=r.kind,
                status=r.status,
                commit=r.commit_sha,
                branch=r.branch,
                error=r.error,
                app_url=self._app_url(r.project) if r.project in live else None,
            )
            event = event_of(end)
            if event is None or r.finished_at is None:
                continue
            ended = as_utc(r.finished_at)
            wanted.extend(
                (end, event, t)
                for t in targets
                if t.project == r.project
                and wants(event, on_deploy=t.on_deploy)
                # A target hears of pipelines that ended after it was added.
                and ended >= as_utc(t.created_at)
            )
        for end, event, target in wanted:
            bodies = {"webhook": webhook_body(event, end), "slack": slack_body(event, end)}
            self._submit(end.project, event, f"{end.pipeline_id}-{target.id}", bodies, target)
        return len(wanted)

    def crash_step(self) -> int:
        """Tell the targets of apps that crash repeatedly, once per crash loop (an app told of
        is told again after a fresh start's count of restarts reached the bound again); how
        many deliveries. Which apps were told is kept in memory: after a restart of Nakama an
        app still crashing is told of once more."""
        if self._app_status is None:
            return 0
        with self._db.session() as s:
            targets = s.scalars(select(NotificationTarget).order_by(NotificationTarget.id)).all()
        by_project: dict[str, list[NotificationTarget]] = {}
        for target in targets:
            by_project.setdefault(target.project, []).append(target)
        self._crashing &= set(by_project)
        sent = 0
        for project, its_targets in by_project.items():
            try:
                status = self._app_status(project)
            except Exception as exc:  # one app's runtime error must not keep others untold
                log.warning("app status not read", project=project, error=str(exc)[:200])
                continue
            if not crash_looping(
                status.state, status.restarts, min_restarts=self._settings.crash_restarts
            ):
                # Up between two crashes is the same loop: only a fresh start (a deploy, a
                # restart, a new pod), which counts restarts from 0 again, ends it.
                if status.restarts < self._settings.crash_restarts and status.state != "unknown":
                    self._crashing.discard(project)
                continue
            if project in self._crashing:
                continue
            self._crashing.add(project)
            crash = CrashLoop(
                project=project,
                state=status.state,
                restarts=status.restarts,
                detail=status.detail,
                app_url=self._app_url(project),
            )
            log.info("app crashing repeatedly", project=project, restarts=status.restarts)
            delivery = f"crash-{project}-{int(time.time())}"
            for target in its_targets:
                self._submit(project, CRASH_EVENT, delivery, crash_bodies(crash), target)
                sent += 1
        return sent

    def _submit(
        self,
        project: str,
        event: str,
        delivery: str,
        bodies: dict[str, dict[str, object]],
        target: NotificationTarget,
    ) -> None:
        self._senders.submit(
            self._deliver,
            project,
            event,
            delivery=delivery,
            body=json.dumps(bodies[target.kind]).encode(),
            target_id=target.id,
            url=self._box.decrypt(target.url, what="a notification URL"),
            secret=self._box.decrypt(target.secret, what="a notification secret")
            if target.secret
            else None,
        )

    def _deliver(
        self,
        project: str,
        event: str,
        *,
        delivery: str,
        body: bytes,
        target_id: int,
        url: str,
        secret: str | None,
    ) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Nakama/{__version__}",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery,
        }
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(secret, body)
        where = {"project": project, "target": target_id, "event": event}
        retrying = Retrying(
            stop=stop_after_attempt(self._settings.attempts),
            wait=wait_exponential(
                multiplier=self._settings.backoff_initial_s, max=self._settings.backoff_max_s
            ),
            retry=retry_if_exception_type((httpx.TransportError, _Retry)),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    status = self._send_once(url, body, headers)
                    if status == 429 or status >= 500:
                        raise _Retry(f"HTTP {status}")
        except RetryError as exc:
            reason = exc.last_attempt.exception()
            log.warning("notification not delivered", reason=str(reason)[:200], **where)
            return
        except InvalidInput as exc:
            log.warning("notification not delivered", reason=str(exc)[:200], **where)
            return
        if status >= 300:
            log.warning("notification refused", status=status, **where)
        else:
            log.info("notification delivered", status=status, **where)

    def _send_once(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        refused = self._refused_host(url)
        if refused is not None:
            host, found = refused
            raise InvalidInput(f"{host!r} now resolves to a non-public address ({found})")
        with httpx.Client(timeout=self._settings.timeout_s, follow_redirects=False) as client:
            return client.post(url, content=body, headers=headers).status_code
