"""Following jobs as they change: the one engine behind every live view (the SSE streams and
the portal's websockets).

A follower subscribes to the bus first and only then reads where things stand, so no change
can fall between the two; events older than what it has already seen are dropped, so a view
never steps back to an older state. A client that reconnects with the id of the last event it
saw gets exactly what it missed while the bus still holds it, else a fresh snapshot.

    async with following(bus, select=..., snapshot=...) as feed:
        for event in feed.initial: ...        # the snapshot (or the missed events)
        async for event in feed.changes: ...  # every later change, until the caller stops
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from proxy.jobs.bus import EventBus, JobEvent
from proxy.jobs.models import Job

SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class FeedEvent:
    kind: str  # "snapshot", or the bus's "created", "updated", "progress", "deleted"
    job: Job
    id: int | None  # the bus event id (None for snapshots): what a client resumes from
    # The bus event (None for snapshots): renders once for every follower (`rendered`).
    source: JobEvent | None = None


@dataclass
class Feed:
    initial: list[FeedEvent]
    changes: AsyncIterator[FeedEvent]


async def _changes(
    queue: asyncio.Queue[JobEvent],
    select: Callable[[Job], bool],
    seen: dict[str, datetime],
    last: int | None,
) -> AsyncIterator[FeedEvent]:
    while True:
        event = await queue.get()
        if last is not None and event.id <= last:
            continue  # already part of the initial events
        job = event.job
        if not select(job):
            continue
        if event.kind != "deleted":
            known = seen.get(job.id)
            if known is not None and job.updated_at < known:
                continue  # read before the snapshot: older than what was shown
            seen[job.id] = job.updated_at
        yield FeedEvent(event.kind, job, event.id, event)


@asynccontextmanager
async def following(
    bus: EventBus,
    *,
    select: Callable[[Job], bool],
    snapshot: Callable[[], Awaitable[list[Job]]],
    after: int | None = None,
) -> AsyncIterator[Feed]:
    """The jobs `select` accepts: a snapshot (or the events missed since bus event `after`),
    then their every change."""
    async with bus.subscribe() as queue:
        seen: dict[str, datetime] = {}
        missed = bus.replay(after) if after is not None else None
        if missed is not None:
            initial = [FeedEvent(e.kind, e.job, e.id, e) for e in missed if select(e.job)]
            last = missed[-1].id if missed else after
        else:
            initial = [FeedEvent(SNAPSHOT, job, None) for job in await snapshot()]
            last = None
        for event in initial:
            seen[event.job.id] = event.job.updated_at
        yield Feed(initial, _changes(queue, select, seen, last))
