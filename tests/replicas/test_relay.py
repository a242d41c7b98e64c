"""Job events between replicas over LISTEN/NOTIFY (`proxy.replicas.relay`), on a real
PostgreSQL schema: what one replica writes reaches the other's bus, cache and live view."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
from sqlalchemy import text

from proxy.db import Database
from proxy.jobs.bus import EventBus, JobEvent
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore, utcnow
from proxy.jobs.writer import JobWriter
from proxy.replicas import EventRelay
from proxy.replicas.relay import channel_for

WAIT_S = 5.0


@dataclass
class Side:
    name: str
    db: Database
    bus: EventBus
    store: JobStore
    writer: JobWriter
    relay: EventRelay
    remote: list[tuple[str, Job]] = field(default_factory=list)


def make_job(**fields: object) -> Job:
    now = utcnow()
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "workflow": "fastwan_t2v",
        "status": JobStatus.QUEUED,
        "params": {"prompt": "a paper boat"},
        "created_at": now,
        "updated_at": now,
    }
    return Job.model_validate({**values, **fields})


@pytest.fixture
async def sides(postgres_url: str) -> AsyncIterator[tuple[Side, Side]]:
    async with AsyncExitStack() as stack:
        made = []
        for name in ("a", "b"):
            db = Database(postgres_url)
            stack.push_async_callback(db.close)
            await db.migrate()
            bus = EventBus()
            store = JobStore(db)
            writer = JobWriter(store, bus)
            side: Side

            def on_remote(kind: str, job: Job, _name: str = name) -> None:
                side_of[_name].remote.append((kind, job))

            relay = EventRelay(
                db=db, replica=name, bus=bus, store=store, writer=writer, on_remote=on_remote
            )
            side = Side(name, db, bus, store, writer, relay)
            made.append(side)
        side_of = {s.name: s for s in made}
        for side in made:
            await side.relay.start()
            stack.push_async_callback(side.relay.close)
        yield made[0], made[1]


async def next_event(queue: asyncio.Queue[JobEvent], kind: str) -> JobEvent:
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await queue.get()
            if event.kind == kind:
                return event


async def test_what_one_replica_writes_reaches_the_others_bus_cache_and_live_view(sides):
    a, b = sides
    async with b.bus.subscribe() as seen_by_b, a.bus.subscribe() as seen_by_a:
        job = await a.writer.create(make_job())
        created = await next_event(seen_by_b, "created")
        assert created.job == job and not created.local
        assert b.remote[-1] == ("created", job)  # the dispatcher would wake for it

        assert await b.store.get(job.id) == job  # b's cache holds it now
        running = await a.writer.update(job.id, status=JobStatus.RUNNING, backend="gpu")
        assert running is not None
        updated = await next_event(seen_by_b, "updated")
        assert updated.job.status is JobStatus.RUNNING
        assert b.store.peek(job.id) == running  # the newer row, without a read

        live = a.writer.progress(running, progress=42.0, step=4, steps=8)
        progress = await next_event(seen_by_b, "progress")
        assert progress.job.progress == 42.0
        assert b.writer.current(running).step == 4  # a status read on b shows a's progress
        assert job.id not in b.writer.running  # b writes nothing of a's job
        assert live.progress == 42.0

        await a.writer.update(job.id, status=JobStatus.COMPLETED, finished_at=utcnow())
        done = await next_event(seen_by_b, "updated")
        assert done.job.status is JobStatus.COMPLETED
        assert b.writer.current(done.job).status is JobStatus.COMPLETED  # live view dropped

        stored = await a.store.get(job.id)
        assert stored is not None
        await a.store.delete(job.id)
        await a.writer.deleted(stored)
        gone = await next_event(seen_by_b, "deleted")
        assert gone.job.id == job.id and b.store.peek(job.id) is None

        # a's own notifications come back to it from the database, and are ignored.
        assert b.relay.received >= 5
        assert all(event.local for event in drain(seen_by_a))


async def test_a_job_too_large_for_one_notification_is_read_from_the_database(sides):
    a, b = sides
    async with b.bus.subscribe() as seen_by_b:
        await a.writer.create(make_job(params={"prompt": "x" * 20_000}))
        created = await next_event(seen_by_b, "created")
        assert created.job.params["prompt"] == "x" * 20_000


async def test_after_its_listener_reconnects_a_replica_reads_jobs_afresh(sides):
    a, b = sides
    job = await a.writer.create(make_job())
    assert await b.store.get(job.id) is not None
    b.relay.listening_changed.clear()
    # The server ends b's listening session (a restart, a network cut): notifications sent
    # meanwhile are lost, so b must not trust its cache afterwards.
    async with a.db.engine.connect() as conn:
        ended = await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": b.relay.application_name},
        )
        assert ended.scalar_one()
    async with asyncio.timeout(WAIT_S * 3):
        await b.relay.listening_changed.wait()
    assert b.relay.connects == 2
    assert b.store.peek(job.id) is None
    async with b.bus.subscribe() as seen_by_b:  # and it hears a again
        await a.writer.update(job.id, status=JobStatus.CANCELLED)
        assert (await next_event(seen_by_b, "updated")).job.status is JobStatus.CANCELLED


def test_each_schema_has_its_own_channel():
    assert channel_for(None) == "fastwan_jobs"
    assert channel_for("t_1") != channel_for("t_2")
    assert len(channel_for("x" * 200)) < 63


def drain(queue: asyncio.Queue[JobEvent]) -> list[JobEvent]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events
