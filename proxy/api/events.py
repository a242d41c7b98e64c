"""Server-Sent Events: every job change, within a second of ComfyUI reporting it.

Event ids are `<boot>:<n>`; a client reconnecting with Last-Event-ID from this process gets
what it missed, and one from an earlier process (or too old) gets a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from proxy.api.native import job_view
from proxy.jobs.bus import JobEvent
from proxy.jobs.models import ACTIVE
from proxy.services import Services, get_services

router = APIRouter(prefix="/api", tags=["events"])

BOOT = uuid.uuid4().hex[:8]
KEEPALIVE_S = 15.0


def _frame(event: JobEvent) -> str:
    data = {"event": event.kind, "job": job_view(event.job)}
    return f"id: {BOOT}:{event.id}\nevent: job\ndata: {json.dumps(data)}\n\n"


def _last_id(header: str | None) -> int | None:
    if not header or ":" not in header:
        return None
    boot, _, number = header.partition(":")
    if boot != BOOT or not number.isdigit():
        return None
    return int(number)


async def _stream(
    request: Request, services: Services, job_id: str | None, last_event_id: str | None
) -> AsyncIterator[str]:
    bus = services.bus
    async with bus.subscribe() as queue:
        yield f"retry: 2000\n: connected {BOOT}\n\n"
        last = _last_id(last_event_id)
        missed = bus.replay(last) if last is not None else None
        if missed is not None:
            for event in missed:
                if job_id is None or event.job.id == job_id:
                    yield _frame(event)
        else:
            # A fresh client (or one we cannot replay for): the current state to start from.
            jobs = (
                [await services.jobs.get(job_id)]
                if job_id
                else await services.jobs.list(statuses=ACTIVE, limit=200)
            )
            for job in jobs:
                snapshot = json.dumps({"event": "snapshot", "job": job_view(job)})
                yield f"event: job\ndata: {snapshot}\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keepalive\n\n"
                continue
            if job_id is None or event.job.id == job_id:
                yield _frame(event)


def _response(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/events", summary="Live job changes (Server-Sent Events)")
async def events(
    request: Request,
    last_event_id: str | None = Header(None),
    services: Services = Depends(get_services),
) -> StreamingResponse:
    """Every job change as an SSE `job` event; reconnect with Last-Event-ID to catch up."""
    return _response(_stream(request, services, None, last_event_id))


@router.get("/jobs/{job_id}/events", summary="Live changes of one job (Server-Sent Events)")
async def job_events(
    job_id: str,
    request: Request,
    last_event_id: str | None = Header(None),
    services: Services = Depends(get_services),
) -> StreamingResponse:
    await services.jobs.get(job_id)  # 404 before the stream starts
    return _response(_stream(request, services, job_id, last_event_id))
