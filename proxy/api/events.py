"""Server-Sent Events: every job change, within a second of ComfyUI reporting it.

Event ids are `<epoch>:<n>`; a client reconnecting with Last-Event-ID from this process gets
what it missed, and one from an earlier process (or too old) gets a fresh snapshot. Framing,
keep-alive pings and client disconnects are sse-starlette's.
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from sse_starlette import EventSourceResponse, ServerSentEvent

from proxy.api.auth import Caller
from proxy.api.deps import ServicesDep
from proxy.api.native import job_view
from proxy.auth import Principal
from proxy.jobs.feed import SNAPSHOT, FeedEvent, following
from proxy.jobs.models import ACTIVE, Job
from proxy.services import Services

router = APIRouter(prefix="/api", tags=["events"])

KEEPALIVE_S = 15.0
RETRY_MS = 2000
# A fresh client of the all-jobs stream starts from at most this many active jobs.
SNAPSHOT_LIMIT = 200

LastEventId = Annotated[str | None, Header()]


def _resume_from(epoch: str, header: str | None) -> int | None:
    if not header or ":" not in header:
        return None
    boot, _, number = header.partition(":")
    if boot != epoch or not number.isdigit():
        return None
    return int(number)


async def _events(
    services: Services, caller: Principal, job_id: str | None, last_event_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    bus = services.bus

    async def snapshot() -> list[Job]:
        if job_id is not None:
            return [await services.jobs.get(job_id, caller)]
        return await services.jobs.list(statuses=ACTIVE, limit=SNAPSHOT_LIMIT, caller=caller)

    def select(job: Job) -> bool:
        return (job_id is None or job.id == job_id) and caller.can_see(job.client_key)

    def frame(event: FeedEvent) -> ServerSentEvent:
        data = json.dumps({"event": event.kind, "job": job_view(event.job)})
        event_id = None if event.kind == SNAPSHOT else f"{bus.epoch}:{event.id}"
        return ServerSentEvent(data=data, event="job", id=event_id)

    yield ServerSentEvent(comment=f"connected {bus.epoch}", retry=RETRY_MS)
    async with following(
        bus,
        select=select,
        snapshot=snapshot,
        after=_resume_from(bus.epoch, last_event_id),
    ) as feed:
        for event in feed.initial:
            yield frame(event)
        async for event in feed.changes:
            yield frame(event)


def _response(stream: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    return EventSourceResponse(stream, ping=KEEPALIVE_S, headers={"Cache-Control": "no-cache"})


@router.get("/events", summary="Live job changes (Server-Sent Events)")
async def events(
    services: ServicesDep, caller: Caller, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Every change of the caller's jobs as an SSE `job` event; reconnect with Last-Event-ID
    to catch up."""
    return _response(_events(services, caller, None, last_event_id))


@router.get("/jobs/{job_id}/events", summary="Live changes of one job (Server-Sent Events)")
async def job_events(
    job_id: str, services: ServicesDep, caller: Caller, last_event_id: LastEventId = None
) -> EventSourceResponse:
    await services.jobs.get(job_id, caller)  # 404 before the stream starts
    return _response(_events(services, caller, job_id, last_event_id))
