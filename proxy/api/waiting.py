"""One call that waits: `Prefer: wait=N` (RFC 7240) or `?wait=N` on any create call or
status read.

A create call that asks to wait holds its answer until the job has ended or N seconds have
passed (at most MAX_WAIT_S): ended → 200 with the job as that surface shows its status;
not yet → 202 with the same body, `Location` of its status and `Retry-After`. A status read
that asks to wait holds until the job changes state (or N passes), then answers as always.
Waiting only watches: a client that disconnects or gives up never stops the job.

Without the option every answer is exactly what it was.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.errors import InvalidInput
from proxy.jobs.models import Job
from proxy.services import Services

# How long a client told "not yet" should wait before asking again.
RETRY_AFTER_S = 5
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([^\s,;\"]*)", re.IGNORECASE)


def requested_wait(request: Request, limit: float) -> float | None:
    """The seconds asked for (`?wait=` wins over `Prefer: wait=`), capped at `limit`;
    None when not asked. A value that is not a number of seconds is a 400 naming it."""
    raw = request.query_params.get("wait")
    field = "wait"
    if raw is None:
        found = _PREFER_WAIT.search(request.headers.get("prefer", ""))
        if found is None:
            return None
        raw, field = found.group(1), "Prefer"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(field, f"wait must be a number of seconds, 0 or more (got {raw!r})")
    return min(seconds, limit)


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (its request body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _ClientGone(Exception):
    """The client left while its answer was held."""


async def _watching(request: Request, work: Awaitable[Job]) -> Job:
    """`work`'s job; _ClientGone if the client leaves first (only the wait is cancelled)."""
    waiting = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            raise _ClientGone()
        return waiting.result()
    finally:
        for task in (waiting, gone):
            task.cancel()
        for task in (waiting, gone):
            with suppress(asyncio.CancelledError, TimeoutError):
                await task


async def _wait_until(
    request: Request,
    services: Services,
    job_id: str,
    seconds: float,
    predicate: Callable[[Job], bool],
) -> Job:
    """The job once `predicate` holds, or as it is after `seconds`."""
    try:
        return await _watching(request, services.jobs.wait(job_id, predicate, seconds))
    except TimeoutError:
        return await services.jobs.get(job_id)


def _applied(seconds: float) -> dict[str, str]:
    return {"Preference-Applied": f"wait={seconds:g}"}


async def created_answer(
    request: Request,
    services: Services,
    job_ids: list[str],
    *,
    answer: Any,
    view: Callable[[], Awaitable[Any]],
    location: str,
) -> Any:
    """What a create call answers: `answer` as always when no wait was asked; else, once
    every job of `job_ids` has ended within the wait, 200 with `view()` (the status as the
    surface shows it), and 202 with it otherwise."""
    seconds = requested_wait(request, services.settings.max_wait_s)
    if seconds is None:
        return answer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    ended = True
    try:
        for job_id in job_ids:
            left = max(deadline - loop.time(), 0.0)
            job = await _wait_until(request, services, job_id, left, lambda j: j.status.finished)
            if not job.status.finished:
                ended = False
                break
    except _ClientGone:
        return Response(status_code=202)  # nobody reads it; the jobs go on
    headers = _applied(seconds)
    if not ended:
        headers |= {"Location": location, "Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(await view(), status_code=200 if ended else 202, headers=headers)


async def status_answer(request: Request, services: Services, job: Job) -> Job:
    """A status read: the job now, or once it has changed state when a wait was asked
    (long-polling); a client that leaves meanwhile gets the job as it is."""
    seconds = requested_wait(request, services.settings.max_wait_s)
    if seconds is None or job.status.finished:
        return job
    status = job.status
    try:
        return await _wait_until(
            request, services, job.id, seconds, lambda j: j.status is not status
        )
    except _ClientGone:
        return job
