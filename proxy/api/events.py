"""Server-Sent Events: every job change, within a second of ComfyUI reporting it.

Event ids are `<epoch>:<n>`; a client reconnecting with Last-Event-ID from this process gets
what it missed, and one from an earlier process (or too old) gets a fresh snapshot. Framing,
keep-alive pings and client disconnects are sse-starlette's.

Two event names: `job` carries the whole job (`{"event": "created"|"updated"|"deleted"|
"snapshot", "job": {...}}`), at every change of state and whenever progress is written;
`progress` carries only what moves while a job runs (`progress_view`: progress, stage, step,
steps, eta_s, message), several times a second. Each is serialised once per change, however
many clients follow.

When the server stops, sse-starlette sets each stream's `shutdown_event`; the stream then
ends on its own and its response completes (the client sees a clean end and reconnects after
`retry`), instead of being cancelled mid-response, which uvicorn reports as an error.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from proxy.api.auth import Caller
from proxy.api.deps import ServicesDep
from proxy.api.links import Links, request_base
from proxy.api.native import NATIVE_WORDS, job_view
from proxy.auth import Principal
from proxy.jobs.bus import PROGRESS, JobEvent
from proxy.jobs.feed import SNAPSHOT, FeedEvent, following
from proxy.jobs.models import ACTIVE, Job
from proxy.services import Services, services_of

router = APIRouter(prefix="/api", tags=["events"])

KEEPALIVE_S = 15.0
RETRY_MS = 2000
# A fresh client of the all-jobs stream starts from at most this many active jobs.
SNAPSHOT_LIMIT = 200

# How long a stopping server waits for its streams to end by themselves (they end within a
# moment: only a frame being sent delays them); under uvicorn's timeout_graceful_shutdown.
SHUTDOWN_GRACE_S = 2.0

LastEventId = Annotated[str | None, Header()]

T = TypeVar("T")


async def _until(stop: anyio.Event, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items` until `stop` is set: then end, without waiting for another item."""
    stopping = asyncio.ensure_future(stop.wait())
    upcoming = asyncio.ensure_future(anext(items))
    try:
        while True:
            await asyncio.wait((stopping, upcoming), return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                return
            yield upcoming.result()  # StopAsyncIteration once `items` ends: caught below
            upcoming = asyncio.ensure_future(anext(items))
    except StopAsyncIteration:
        return
    finally:
        # Cancelling the pending `anext` ends `items` too (its generator is closed).
        for task in (stopping, upcoming):
            task.cancel()
        await asyncio.gather(stopping, upcoming, return_exceptions=True)


def progress_view(job: Job) -> dict[str, Any]:
    """What a progress event carries: the fields progress changes, not the whole job."""
    return {
        "id": job.id,
        "status": NATIVE_WORDS[job.phase],
        "progress": job.progress,
        "stage": job.stage,
        "step": job.step,
        "steps": job.steps,
        "eta_s": job.eta_s,
        "message": job.message,
        "updated_at": job.updated_at.isoformat(),
    }


def _renderer(links: Links) -> Callable[[FeedEvent | JobEvent], tuple[str, str]]:
    """An SSE event's name and data: `progress` with `progress_view` for progress not yet
    written, else `job` with the whole job (its URLs under `links`)."""

    def render(event: FeedEvent | JobEvent) -> tuple[str, str]:
        if event.kind == PROGRESS:
            return "progress", json.dumps(progress_view(event.job))
        return "job", json.dumps({"event": event.kind, "job": job_view(event.job, links)})

    return render


def _resume_from(epoch: str, header: str | None) -> int | None:
    if not header or ":" not in header:
        return None
    boot, _, number = header.partition(":")
    if boot != epoch or not number.isdigit():
        return None
    return int(number)


async def _events(
    services: Services,
    caller: Principal,
    base: str,
    job_id: str | None,
    last_event_id: str | None,
    stop: anyio.Event,
) -> AsyncIterator[ServerSentEvent]:
    bus = services.bus

    async def snapshot() -> list[Job]:
        if job_id is not None:
            return [await services.jobs.get(job_id, caller)]
        return await services.jobs.list(statuses=ACTIVE, limit=SNAPSHOT_LIMIT, caller=caller)

    def select(job: Job) -> bool:
        return (job_id is None or job.id == job_id) and caller.can_see(job.client_key)

    # Rendered once per event for every stream under the same address; no signed URLs in
    # streams (a live view reads the video with its own key or session).
    links = Links(base)
    render = _renderer(links)

    def frame(event: FeedEvent) -> ServerSentEvent:
        name, data = event.source.rendered(f"sse {base}", render) if event.source else render(event)
        event_id = None if event.kind == SNAPSHOT else f"{bus.epoch}:{event.id}"
        return ServerSentEvent(data=data, event=name, id=event_id)

    yield ServerSentEvent(comment=f"connected {bus.epoch}", retry=RETRY_MS)
    async with following(
        bus,
        select=select,
        snapshot=snapshot,
        after=_resume_from(bus.epoch, last_event_id),
    ) as feed:
        for event in feed.initial:
            yield frame(event)
        async for event in _until(stop, feed.changes):
            yield frame(event)


def _response(
    request: Request, caller: Principal, job_id: str | None, last_event_id: str | None
) -> EventSourceResponse:
    stop = anyio.Event()  # set by sse-starlette when the server is stopping
    services = services_of(request)
    return EventSourceResponse(
        _events(services, caller, request_base(request), job_id, last_event_id, stop),
        ping=KEEPALIVE_S,
        headers={"Cache-Control": "no-cache"},
        shutdown_event=stop,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


@router.get("/events", summary="Live job changes (Server-Sent Events)")
async def events(
    request: Request, caller: Caller, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Every change of the caller's jobs as an SSE `job` event; reconnect with Last-Event-ID
    to catch up."""
    return _response(request, caller, None, last_event_id)


@router.get("/jobs/{job_id}/events", summary="Live changes of one job (Server-Sent Events)")
async def job_events(
    job_id: str,
    request: Request,
    services: ServicesDep,
    caller: Caller,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    await services.jobs.get(job_id, caller)  # 404 before the stream starts
    return _response(request, caller, job_id, last_event_id)
