"""Callbacks on create calls: `webhook_url` (and `webhook_events`) in the body of a create
call send that job's events (each job's, for a call that makes several) to the URL, signed,
through the durable outbox (`proxy.webhooks`). The target is checked before any job exists
(a bad URL is a 4xx and no job), and subscribed as soon as they do (a job that has already
ended is told at once). The payload's URLs are absolute: under PUBLIC_URL, else under the
address this call came to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, Field

from proxy.api.links import Links
from proxy.errors import InvalidInput
from proxy.jobs.models import Job
from proxy.services import Services

T = TypeVar("T")


def _comma_list(value: object) -> object:
    """A form field (multipart) carries the events as one text: `job.started,job.progress`."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


WebhookEvents = Annotated[list[str] | None, BeforeValidator(_comma_list)]

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
        WebhookEvents,
        Field(None, description="Also send these: job.started, job.progress (every few s)"),
    ),
}
CALLBACK_KEYS = frozenset(CALLBACK_FIELDS)


async def with_callbacks(
    services: Services,
    links: Links,
    body: BaseModel,
    create: Callable[[], Awaitable[T]],
    job_ids: Callable[[T], list[str]],
) -> T:
    """`create()`, with the body's webhook target (if any) checked first and subscribed to
    every job `job_ids` finds in what it made."""
    url: str | None = getattr(body, "webhook_url", None)
    events: list[str] | None = getattr(body, "webhook_events", None)
    if url is None:
        if events:
            raise InvalidInput("webhook_events", "give webhook_url too: where to send them")
        return await create()
    services.webhooks.check_target(url, events)
    made = await create()
    for job_id in job_ids(made):
        await services.webhooks.subscribe(job_id, url, events, base=links.base)
    return made


async def with_callback(
    services: Services, links: Links, body: BaseModel, create: Callable[[], Awaitable[Job]]
) -> Job:
    """`with_callbacks` for a call that makes one job."""
    return await with_callbacks(services, links, body, create, lambda job: [job.id])
