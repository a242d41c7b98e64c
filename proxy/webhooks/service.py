"""The webhook service: turns job events into outbox rows, and answers the routes.

Where the events come from:

- a job's end (completed, failed, cancelled) from the job writer, as a `JobObserver`: told of
  every end once the store has it, on every path that ends a job; `finished` only starts the
  enqueueing (it must not block the writer), and the lifespan's close waits for what it
  started;
- `job.started` and `job.progress` from the event bus (the same stream the SSE clients
  read), followed by one task; only jobs some target asked these of cost anything, and
  progress is sent at most every WEBHOOK_PROGRESS_INTERVAL_S per job.

Every event goes to WEBHOOK_URL (when set) and to each target its create call named
(`subscribe`). A deleted job's targets are deleted with it, and its finished deliveries; the
pending ones are still delivered (a job deleted while it ran still tells its receiver it was
cancelled), then pruned with the rest a week after their event.

Known gap: the outbox row of a job's end is written just after the job's row, not in the same
transaction (that needs the job writer's transaction): a proxy killed in between loses
that one callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError

from proxy.db import Database
from proxy.errors import InvalidInput, NotFound
from proxy.jobs.bus import EventBus, JobEvent
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore, utcnow
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

Render = Callable[[Job], dict[str, Any]]

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


def timestamp_text(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


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
        self.signer = self._signer(settings)
        self.backoff = Backoff(settings.webhook_retry_min_s, settings.webhook_retry_max_s)
        self.horizon = timedelta(seconds=settings.webhook_retry_horizon_s)
        self.outbox: Outbox | None = None
        self._stack = AsyncExitStack()
        self._follower: asyncio.Task[None] | None = None
        self._enqueueing: set[asyncio.Task[None]] = set()
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
        self.outbox.start()
        self._follower = asyncio.create_task(self._follow(events), name="webhook-events")

    async def close(self) -> None:
        """Finish the enqueueing under way (the rows are then durable), then stop."""
        if self._enqueueing:
            await asyncio.wait(set(self._enqueueing), timeout=self.settings.webhook_timeout_s)
        tasks = [t for t in (self._follower, *self._enqueueing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._follower = None
        if self.outbox is not None:
            await self.outbox.close()
        await self._stack.aclose()

    async def idle(self) -> None:
        """Until every enqueueing started so far has ended (tests bound this wait)."""
        while pending := [t for t in self._enqueueing if not t.done()]:
            await asyncio.wait(pending)

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

    async def subscribe(self, job_id: str, url: str, events: list[str] | None) -> None:
        """Send this job's events to `url` too (terminal ones, plus job.started and
        job.progress if asked); checked as `check_target` does. A job that has already ended
        (or started) by now is told so at once: the subscriber does not miss it."""
        self.check_target(url, events)
        if await self.jobs.get(job_id) is None:
            raise NotFound(f"no job with id {job_id!r}")
        target = Target(url, extra_events(events, "webhook_events"))
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
        """The job has just been recorded completed, failed or cancelled."""
        event = TERMINAL_OF.get(job.status)
        if event is not None:
            self._spawn(self._on_finished(job, event))

    async def deleted(self, job: Job) -> None:
        self._followed.pop(job.id, None)
        try:
            await self.store.forget_job(job.id)
        except SQLAlchemyError as exc:
            log.warning("webhooks: the targets of deleted job %s were kept: %s", job.id, exc)

    async def _on_finished(self, job: Job, event: str) -> None:
        try:
            targets = await self._targets(job.id)
            await self._enqueue(job, event, targets)
        except SQLAlchemyError as exc:
            log.error("webhooks: %s of job %s not enqueued (lost): %s", event, job.id, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="webhook-enqueue")
        self._enqueueing.add(task)
        task.add_done_callback(self._enqueueing.discard)

    # -- the bus follower ----------------------------------------------------------------------

    async def _follow(self, events: asyncio.Queue[JobEvent]) -> None:
        """Turn bus events into job.started / job.progress until cancelled."""
        while True:
            event = await events.get()
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

    async def _targets(self, job_id: str) -> list[Target]:
        mine = await self.store.targets_of(job_id)
        if self.global_target is None:
            return mine
        return [self.global_target, *(t for t in mine if t.url != self.global_target.url)]

    async def _enqueue(
        self, job: Job, event: str, targets: Sequence[Target], *, unique: bool = False
    ) -> None:
        """One outbox row per target for this event of the job, written before any attempt.
        `unique`: every call is a new event (progress); otherwise one per job attempt."""
        if not targets:
            return
        now = utcnow()
        key = f"{job.attempt}:{event}" + (f":{uuid.uuid4().hex}" if unique else "")
        body = json.dumps(
            {"type": event, "timestamp": timestamp_text(now), "data": self.render(job)},
            separators=(",", ":"),
        )
        rows = [
            {
                "id": delivery_id(job.id, key, target.url),
                "job_id": job.id,
                "target_url": target.url,
                "event": event,
                "payload": body,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "attempt_log": [],
                "next_attempt_at": now,
                "expires_at": now + self.horizon,
                "created_at": now,
            }
            for target in targets
        ]
        await self.store.enqueue(rows)
        self._wake()

    def _wake(self) -> None:
        if self.outbox is not None:
            self.outbox.wake()
