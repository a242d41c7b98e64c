"""The outbox worker: sends due deliveries, a few at a time, and records each outcome.

One task, owned by the webhook service (and so by the lifespan). It never polls: it sends
what is due, then sleeps until the next delivery falls due or until it is woken (a new event
enqueued, a manual retry, an attempt ended and freed a slot). A new process picks up the
pending rows of the last one, whatever it was doing when it stopped: a stop cancels the
attempts in flight, and those rows are still pending and due, so they are sent again (the
receiver sees the same `webhook-id` and may drop the duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import suppress
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy.exc import SQLAlchemyError

from proxy.jobs.store import utcnow
from proxy.webhooks.delivery import Attempt, Backoff, attempt, outcome_fields
from proxy.webhooks.signing import SecretError, Signer
from proxy.webhooks.store import Delivery, DeliveryStatus, WebhookStore

log = logging.getLogger("proxy.webhooks")

CONCURRENCY = 4
# After a database error, or a secret that cannot be read, look again this much later.
TROUBLE_RETRY_S = 5.0
# Finished deliveries (delivered, failed) are kept this long after their event, then pruned.
KEEP_FINISHED_S = 7 * 24 * 3600.0
PRUNE_INTERVAL_S = 3600.0

# How much longer than an attempt's timeout a claimed delivery is held.
CLAIM_MARGIN_S = 30.0


def where(url: str) -> str:
    """A target as logs name it: scheme, host and port (paths and queries often carry
    tokens: an n8n resume URL, a Zapier catch hook)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Outbox:
    def __init__(
        self,
        store: WebhookStore,
        signer: Signer,
        client: httpx.AsyncClient,
        *,
        timeout_s: float,
        backoff: Backoff,
        concurrency: int = CONCURRENCY,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.client = client
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.concurrency = concurrency
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        # Counts recorded outcomes, so a waiter (`wait_for_outcome`) misses none.
        self.outcomes = 0
        self._recorded = asyncio.Condition()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-outbox")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop sending: the attempts in flight are cancelled and stay pending."""
        tasks = [t for t in (self._task, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._busy.clear()

    async def wait_for_outcome(self, seen: int) -> None:
        """Until more than `seen` outcomes have been recorded (callers bound the wait)."""
        async with self._recorded:
            await self._recorded.wait_for(lambda: self.outcomes > seen)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        next_prune = time.monotonic()
        while True:
            self._wake.clear()  # before looking: a wake-up while looking is kept
            try:
                if time.monotonic() >= next_prune:
                    await self._prune()
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
                await self._send_due()
                wait = await self._until_next()
            except SQLAlchemyError as exc:
                log.warning("webhooks: the outbox could not be read (%s); again shortly", exc)
                wait = TROUBLE_RETRY_S
            until_prune = max(0.0, next_prune - time.monotonic())
            await self._sleep(until_prune if wait is None else min(wait, until_prune))

    async def _sleep(self, timeout_s: float) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()

    async def _send_due(self) -> None:
        free = self.concurrency - len(self._busy)
        if free <= 0:
            return
        # Claimed for longer than one attempt can last: should this replica die while
        # sending, another sends it after that.
        hold_s = self.timeout_s + CLAIM_MARGIN_S
        for delivery in await self.store.due(utcnow(), free, list(self._busy), hold_s):
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook:{delivery.id}")
            self._busy[delivery.id] = task

    async def _until_next(self) -> float | None:
        """Seconds until the next delivery is due; None: nothing to do until woken."""
        if len(self._busy) >= self.concurrency:
            return None  # an ending attempt wakes the loop
        due = await self.store.next_due(list(self._busy))
        if due is None:
            return None
        return max(0.0, (due - utcnow()).total_seconds())

    async def _prune(self) -> None:
        pruned = await self.store.prune(utcnow() - timedelta(seconds=KEEP_FINISHED_S))
        if pruned:
            log.info("webhooks: pruned %d finished deliveries older than 7 days", pruned)

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            tried = await attempt(self.client, self.signer, delivery, self.timeout_s, utcnow())
            fields = outcome_fields(delivery, tried, self.backoff, self.rng)
            await self.store.record(delivery.id, **fields)
            self._log(delivery, tried, fields)
            async with self._recorded:
                self.outcomes += 1
                self._recorded.notify_all()
        except (SQLAlchemyError, SecretError, OSError) as exc:
            # Kept out of the next rounds for a while (it stays busy), not resent at once.
            log.error("webhooks: delivery %s not attempted or not recorded: %s", delivery.id, exc)
            await asyncio.sleep(TROUBLE_RETRY_S)
        except Exception:  # a defect here must not stop the other deliveries
            log.exception("webhooks: delivery %s failed unexpectedly", delivery.id)
            await asyncio.sleep(TROUBLE_RETRY_S)
        finally:
            self._busy.pop(delivery.id, None)
            self._wake.set()

    def _log(self, delivery: Delivery, tried: Attempt, fields: dict[str, object]) -> None:
        what = (
            f"webhook {delivery.id} {delivery.event} of job {delivery.job_id} to "
            f"{where(delivery.target_url)}"
        )
        number = fields["attempts"]
        if fields["status"] == DeliveryStatus.DELIVERED.value:
            log.info("%s: delivered (HTTP %s, attempt %s)", what, tried.status_code, number)
        elif fields["status"] == DeliveryStatus.PENDING.value:
            log.warning(
                "%s: %s (attempt %s); next attempt at %s",
                what,
                tried.error,
                number,
                fields["next_attempt_at"],
            )
        else:
            log.warning("%s: failed for good: %s (attempt %s)", what, fields["last_error"], number)
