"""In-process fan-out of job changes to whoever listens (SSE, websockets, waiters); with
replicas, the changes the others make arrive here too (`proxy.replicas.relay`).

Owned by the app lifespan. Each subscriber gets its own bounded queue; a subscriber that
stops reading loses the oldest events rather than blocking the publisher (every event carries
the whole job snapshot, so the newest one is always enough to catch up).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.jobs.models import Job

T = TypeVar("T")


# A running job's progress, shown but not yet written to the store (`JobWriter.progress`).
PROGRESS = "progress"


@dataclass(frozen=True)
class JobEvent:
    id: int  # monotonically increasing per process, used as the SSE event id
    kind: str  # "created", "updated", "progress", "deleted"
    job: Job
    # False for a change made by another replica (`proxy.replicas.relay`): shown to clients,
    # but what acts on a change once (callbacks, metrics) leaves it to the replica that made it.
    local: bool = True
    # Renderings of this event, made once however many clients receive it (`rendered`).
    _renderings: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def payload(self) -> dict[str, Any]:
        return {"event": self.kind, "job": self.job.model_dump(mode="json")}

    def rendered(self, name: str, render: Callable[[JobEvent], T]) -> T:
        """`render(self)`, made by the first caller of `name` and shared with the rest."""
        if name not in self._renderings:
            self._renderings[name] = render(self)
        result: T = self._renderings[name]
        return result


class EventBus:
    def __init__(self, queue_size: int = 1000, replay_size: int = 500) -> None:
        # Names this bus's event ids: an id from another process (or an earlier run) cannot
        # be replayed from here.
        self.epoch = uuid.uuid4().hex[:8]
        self._subscribers: set[asyncio.Queue[JobEvent]] = set()
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        # Recent events, so an SSE client reconnecting with Last-Event-ID misses nothing.
        self._recent: list[JobEvent] = []
        self._replay_size = replay_size
        # Told of every local event as it is published (the relay to the other replicas);
        # each must not block.
        self.forwarders: list[Callable[[JobEvent], None]] = []

    def publish(self, kind: str, job: Job, *, local: bool = True) -> JobEvent:
        event = JobEvent(id=next(self._ids), kind=kind, job=job, local=local)
        if local:
            for forward in self.forwarders:
                forward(event)
        self._recent.append(event)
        if len(self._recent) > self._replay_size:
            del self._recent[: len(self._recent) - self._replay_size]
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        return event

    def replay(self, last_id: int) -> list[JobEvent] | None:
        """Events after `last_id`, or None when some of them are no longer kept."""
        if self._recent and self._recent[0].id > last_id + 1:
            return None
        return [event for event in self._recent if event.id > last_id]

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def wait_for(
        self,
        job_id: str,
        predicate: Callable[[Job], bool],
        fetch: Callable[[], Awaitable[Job | None]],
        timeout_s: float,
    ) -> Job:
        """Wait until the job satisfies `predicate`; raises TimeoutError after `timeout_s`."""
        async with self.subscribe() as queue:
            # Read the current state only once subscribed, so no change falls in between.
            current = await fetch()
            if current is not None and predicate(current):
                return current
            async with asyncio.timeout(timeout_s):
                while True:
                    event = await queue.get()
                    if event.job.id == job_id and predicate(event.job):
                        return event.job
