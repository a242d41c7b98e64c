"""The webhook service: turns job events into outbox rows, and answers the routes.

Where the events come from:

- a job's end (completed, failed, cancelled) from the job writer: its outbox rows are
  written in the transaction that records the end (`record_end`, one of the writer's end
  records), so no end is recorded without its callbacks, whatever path ended the job and
  whenever the process dies; `finished` (the writer's observer) then wakes the sender;
- `job.started` and `job.progress` from the event bus (the same stream the SSE clients
  read), followed by one task; only jobs some target asked these of cost anything, and
  progress is sent at most every WEBHOOK_PROGRESS_INTERVAL_S per job.

Every event goes to WEBHOOK_URL (when set) and to each target its create call named
(`subscribe`). A payload's URLs are absolute: under PUBLIC_URL, else under the address of the
create call that named the target (for WEBHOOK_URL, the address the proxy listens on).

A deleted job's targets are deleted with it, and its finished deliveries; the pending ones
are still delivered (a job deleted while it ran still tells its receiver it was cancelled),
then pruned with the rest a week after their event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database
from proxy.errors import InvalidInput, NotFound
from proxy.jobs.bus import EventBus, JobEvent
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore, iso_utc, utcnow
from proxy.settings import Settings
from proxy.webhooks.delivery import Backoff
from proxy.webhooks.outbox import Outbox
from proxy.webhooks.signing import Signer
from proxy.webhooks.store import Delivery, DeliveryStatus, Target, WebhookStore
from proxy.webhooks.targets import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PROGRESS,
    STARTED,
    check_url,
    extra_events,
    url_problem,
)

log = logging.getLogger("proxy.webhooks")

# The job as a payload shows it, its URLs under the given address.
Render = Callable[[Job, str], dict[str, Any]]

TERMINAL_OF = {
    JobStatus.COMPLETED: COMPLETED,
    JobStatus.FAILED: FAILED,
    JobStatus.CANCELLED: CANCELLED,
}
# Running jobs followed for job.started / job.progress at once (the oldest is forgotten past
# it: a finished job whose last event the bus dropped, say).
MAX_FOLLOWED = 10_000


class WebhookConfigError(ValueError):
    """WEBHOOK_URL, WEBHOOK_EVENTS or WEBHOOK_SECRET cannot be used (the start fails)."""


def delivery_id(job_id: str, event_key: str, url: str) -> str:
    """The `webhook-id` of one event for one target: the same however often it is enqueued
    or sent, so a second enqueue is a no-op and receivers can drop repeats."""
    digest = hashlib.sha256(f"{job_id}\n{event_key}\n{url}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


@dataclass
class _Followed:
    """What the bus follower knows of one running job."""

    attempt: int
    targets: list[Target]  # those that asked for job.started or job.progress
    started_sent: bool = False
    progress_sent_at: float | None = None  # monotonic


class WebhookService:
    """Owned by the lifespan: `start` before the first job event, `close` after the last."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        jobs: JobStore,
        bus: EventBus,
        render: Render,
    ) -> None:
        self.settings = settings
        self.store = WebhookStore(db)
        self.jobs = jobs
        self.bus = bus
        self.render = render
        self.global_target = self._global_target(settings)
        # Where payload URLs point when neither PUBLIC_URL nor the target says.
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        self.default_base = f"http://{host}:{settings.port}"
        self.signer = self._signer(settings)
        self.backoff = Backoff(settings.webhook_retry_min_s, settings.webhook_retry_max_s)
        self.horizon = timedelta(seconds=settings.webhook_retry_horizon_s)
        self.outbox: Outbox | None = None
        self._stack = AsyncExitStack()
        self._follower: asyncio.Task[None] | None = None
        self._followed: OrderedDict[str, _Followed] = OrderedDict()

    @staticmethod
    def _global_target(settings: Settings) -> Target | None:
        try:
            extras = extra_events(settings.webhook_events, "WEBHOOK_EVENTS")
        except InvalidInput as exc:
            raise WebhookConfigError(exc.message) from None
        if not settings.webhook_url:
            return None
        problem = url_problem(settings.webhook_url)
        if problem:
            raise WebhookConfigError(f"WEBHOOK_URL {problem}")
        return Target(settings.webhook_url, extras)

    @staticmethod
    def _signer(settings: Settings) -> Signer:
        try:
            return Signer(settings.webhook_secret, settings.data_dir)
        except ValueError as exc:
            raise WebhookConfigError(str(exc)) from None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the bus (call it before anything publishes job events) and start the
        outbox worker, which first sends whatever an earlier process left pending."""
        stack = self._stack
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                follow_redirects=False, timeout=httpx.Timeout(self.settings.webhook_timeout_s)
            )
        )
        events = await stack.enter_async_context(self.bus.subscribe())
        self.outbox = Outbox(
            self.store,
            self.signer,
            client,
            timeout_s=self.settings.webhook_timeout_s,
            backoff=self.backoff,
        )
        if self.global_target is not None:
            await self.signer.secret()  # made (and its file logged) now, not mid-delivery
            if not self.settings.public_url:
                log.warning(
                    "WEBHOOK_URL is set without PUBLIC_URL: its payloads' URLs are under %s; "
                    "set PUBLIC_URL to the address receivers can reach",
                    self.default_base,
                )
        self.outbox.start()
        self._follower = asyncio.create_task(self._follow(events), name="webhook-events")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
        if self.outbox is not None:
            await self.outbox.close()
        await self._stack.aclose()

    # -- what the surfaces call --------------------------------------------------------------

    def check_target(
        self,
        url: str,
        events: list[str] | None,
        field: str = "webhook_url",
        events_field: str = "webhook_events",
    ) -> None:
        """InvalidInput naming `field` for a URL that cannot be a target (not http/https, no
        host, credentials in it, a host WEBHOOK_ALLOWED_HOSTS leaves out), or naming
        `events_field` for an unknown event."""
        check_url(url, field, self.settings.webhook_allowed_hosts)
        extra_events(events, events_field)

    async def subscribe(
        self, job_id: str, url: str, events: list[str] | None, base: str | None = None
    ) -> None:
        """Send this job's events to `url` too (terminal ones, plus job.started and
        job.progress if asked), their URLs under `base` (unless PUBLIC_URL is set); checked
        as `check_target` does. A job that has already ended (or started) by now is told so
        at once: the subscriber does not miss it."""
        self.check_target(url, events)
        if await self.jobs.get(job_id) is None:
            raise NotFound(f"no job with id {job_id!r}")
        target = Target(url, extra_events(events, "webhook_events"), base)
        await self.store.save_target(job_id, target, utcnow())
        followed = self._followed.get(job_id)
        if followed is not None:
            others = [t for t in followed.targets if t.url != url]
            followed.targets = others + ([target] if target.events else [])
        job = await self.jobs.get(job_id)
        if job is None:
            return
        if job.status.finished:
            await self._enqueue(job, TERMINAL_OF[job.status], [target])
        elif job.status is JobStatus.RUNNING and target.wants(STARTED):
            await self._enqueue(job, STARTED, [target])

    # -- the routes --------------------------------------------------------------------------

    async def deliveries(self, job_id: str, *, limit: int, offset: int) -> list[Delivery]:
        return await self.store.list_for_job(job_id, limit=limit, offset=offset)

    async def count(self, job_id: str) -> int:
        return await self.store.count_for_job(job_id)

    async def retry(self, job_id: str, delivery_id: str) -> Delivery:
        """Send the delivery again now (retried as a new one would be); NotFound if the job
        has no such delivery."""
        now = utcnow()
        delivery = await self.store.reschedule(job_id, delivery_id, now, now + self.horizon)
        if delivery is None:
            raise NotFound(f"no delivery with id {delivery_id!r} for job {job_id!r}")
        log.info("webhook %s of job %s: sent again on request", delivery_id, job_id)
        self._wake()
        return delivery

    async def settled(self, job_id: str) -> list[Delivery]:
        """The job's deliveries once none is pending (tests bound this wait)."""
        assert self.outbox is not None
        while True:
            seen = self.outbox.outcomes
            rows = await self.store.list_for_job(job_id, limit=10_000, offset=0)
            if all(row.status is not DeliveryStatus.PENDING for row in rows):
                return rows
            await self.outbox.wait_for_outcome(seen)

    # -- the job writer's observer ------------------------------------------------------------

    def finished(self, job: Job) -> None:
        """The job has just been recorded completed, failed or cancelled (its rows with it)."""
        self._wake()

    async def record_end(self, conn: AsyncConnection, job: Job) -> None:
        """The outbox rows of a job's end, in the transaction that records it."""
        event = TERMINAL_OF.get(job.status)
        if event is not None:
            targets = await self._targets(job.id, conn)
            await self.store.enqueue(self._rows(job, event, targets), conn)

    async def deleted(self, job: Job) -> None:
        self._followed.pop(job.id, None)
        try:
            await self.store.forget_job(job.id)
        except SQLAlchemyError as exc:
            log.warning("webhooks: the targets of deleted job %s were kept: %s", job.id, exc)

    # -- the bus follower ----------------------------------------------------------------------

    async def _follow(self, events: asyncio.Queue[JobEvent]) -> None:
        """Turn bus events into job.started / job.progress until cancelled."""
        while True:
            event = await events.get()
            if not event.local:
                continue  # the replica that runs the job calls back (once)
            try:
                await self.observe(event)
            except SQLAlchemyError as exc:
                log.warning("webhooks: job event of %s not handled: %s", event.job.id, exc)
            except Exception:  # a defect must not end the follower
                log.exception("webhooks: job event of %s not handled", event.job.id)

    async def observe(self, event: JobEvent) -> None:
        job = event.job
        if event.kind == "deleted" or job.status is not JobStatus.RUNNING:
            self._followed.pop(job.id, None)
            return
        followed = self._followed.get(job.id)
        if followed is None or followed.attempt != job.attempt:
            wanting = [t for t in await self._targets(job.id) if t.events]
            followed = self._followed[job.id] = _Followed(job.attempt, wanting)
            while len(self._followed) > MAX_FOLLOWED:
                self._followed.popitem(last=False)
        if not followed.targets:
            return
        if not followed.started_sent:
            followed.started_sent = True
            await self._enqueue(job, STARTED, [t for t in followed.targets if t.wants(STARTED)])
            return
        now = time.monotonic()
        last = followed.progress_sent_at
        if last is not None and now - last < self.settings.webhook_progress_interval_s:
            return
        wanting = [t for t in followed.targets if t.wants(PROGRESS)]
        if wanting:
            followed.progress_sent_at = now
            await self._enqueue(job, PROGRESS, wanting, unique=True)

    # -- enqueueing ----------------------------------------------------------------------------

    async def _targets(self, job_id: str, conn: AsyncConnection | None = None) -> list[Target]:
        mine = await self.store.targets_of(job_id, conn)
        if self.global_target is None:
            return mine
        return [self.global_target, *(t for t in mine if t.url != self.global_target.url)]

    async def _enqueue(
        self, job: Job, event: str, targets: Sequence[Target], *, unique: bool = False
    ) -> None:
        """One outbox row per target for this event of the job, written before any attempt.
        `unique`: every call is a new event (progress); otherwise one per job attempt."""
        rows = self._rows(job, event, targets, unique=unique)
        if rows:
            await self.store.enqueue(rows)
            self._wake()

    def _rows(
        self, job: Job, event: str, targets: Sequence[Target], *, unique: bool = False
    ) -> list[dict[str, Any]]:
        now = utcnow()
        key = f"{job.attempt}:{event}" + (f":{uuid.uuid4().hex}" if unique else "")
        bodies: dict[str, str] = {}

        def body(target: Target) -> str:
            base = self.settings.public_url or target.base or self.default_base
            if base not in bodies:
                data = {
                    "type": event,
                    "timestamp": iso_utc(now),
                    "data": self.render(job, base),
                }
                bodies[base] = json.dumps(data, separators=(",", ":"))
            return bodies[base]

        return [
            {
                "id": delivery_id(job.id, key, target.url),
                "job_id": job.id,
                "target_url": target.url,
                "event": event,
                "payload": body(target),
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "attempt_log": [],
                "next_attempt_at": now,
                "expires_at": now + self.horizon,
                "created_at": now,
            }
            for target in targets
        ]

    def _wake(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()
