"""Callbacks on create calls: `webhook_url` (and `webhook_events`) in the body of a create
call send that job's events to the URL, signed, through the durable outbox
(`proxy.webhooks`). The target is checked before the job exists (a bad URL is a 4xx and no
job), and subscribed as soon as it does (one that has already ended is told at once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from proxy.errors import InvalidInput
from proxy.jobs.models import Job
from proxy.services import Services

CALLBACK_FIELDS: dict[str, tuple[Any, Any]] = {
    "webhook_url": (
        str | None,
        Field(
            None,
            description="POSTed the job (signed, Standard Webhooks) when it completes, fails "
            "or is cancelled; retried for up to a day",
        ),
    ),
    "webhook_events": (
        list[str] | None,
        Field(None, description="Also send these: job.started, job.progress (every few s)"),
    ),
}
CALLBACK_KEYS = frozenset(CALLBACK_FIELDS)


async def with_callback(
    services: Services, body: BaseModel, create: Callable[[], Awaitable[Job]]
) -> Job:
    """`create()`, with the body's webhook target (if any) checked first and subscribed."""
    url: str | None = getattr(body, "webhook_url", None)
    events: list[str] | None = getattr(body, "webhook_events", None)
    if url is None:
        if events:
            raise InvalidInput("webhook_events", "give webhook_url too: where to send them")
        return await create()
    services.webhooks.check_target(url, events)
    job = await create()
    await services.webhooks.subscribe(job.id, url, events)
    return job
