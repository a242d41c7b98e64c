"""Live progress: shown at once, written now and then, never shown for a job that is no
longer running, and written on the way out."""

import asyncio

from proxy.db import Database
from proxy.jobs.bus import PROGRESS, EventBus
from proxy.jobs.models import JobStatus
from proxy.jobs.store import JobStore
from proxy.jobs.writer import JobWriter
from tests.jobs.test_store import make_job


async def test_progress_is_live_until_written_and_never_outlives_a_stop(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    try:
        bus = EventBus()
        writer = JobWriter(JobStore(db), bus)
        job = await writer.create(make_job())
        assert writer.progress(job, progress=5.0) is job  # queued: nothing to show
        running = await writer.update(job.id, status=JobStatus.RUNNING)
        assert running is not None

        async with bus.subscribe() as events:
            live = writer.progress(running, progress=42.0, stage="decoding")
            event = events.get_nowait()
            assert (event.kind, event.job.progress) == (PROGRESS, 42.0)
            stored = await writer.store.get(job.id)
            assert stored is not None and stored.progress == 0.0  # not written
            assert writer.current(stored).progress == 42.0  # but what a read shows

            stopped = await writer.update(job.id, status=JobStatus.CANCELLED)
            assert stopped is not None and writer.current(stopped) is stopped
            events.get_nowait()  # the stop itself
            # A tracker that had not noticed yet: its progress is not shown.
            assert writer.progress(live, progress=50.0) is live
            assert events.empty()
    finally:
        await db.close()


async def test_a_stopping_proxy_writes_what_it_showed(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    try:
        writer = JobWriter(JobStore(db), EventBus())
        job = await writer.create(make_job())
        running = await writer.update(job.id, status=JobStatus.RUNNING)
        assert running is not None
        writer.progress(running, progress=61.5, stage="decoding", eta_s=3.0)
        await writer.flush()
        stored = await writer.store.get(job.id)
        assert stored is not None
        assert (stored.progress, stored.stage, stored.eta_s) == (61.5, "decoding", 3.0)
        assert writer.live == {}
    finally:
        await db.close()


async def test_no_progress_is_shown_while_a_stop_is_being_written(tmp_path):
    """A progress event published during the stop's write would be newer than the stop
    and hide it from every live view (the UI would show the job running for ever)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    try:
        bus = EventBus()
        writer = JobWriter(JobStore(db), bus)
        job = await writer.create(make_job())
        running = await writer.update(job.id, status=JobStatus.RUNNING)
        assert running is not None
        async with bus.subscribe() as events:
            stopping = asyncio.create_task(writer.update(job.id, status=JobStatus.CANCELLED))
            await asyncio.sleep(0)  # one loop turn: the stop's write has begun, not ended
            assert writer.progress(running, progress=70.0) is running  # not shown
            stopped = await stopping
            kinds = []
            while not events.empty():
                kinds.append(events.get_nowait().kind)
            assert kinds == ["updated"] and stopped is not None
    finally:
        await db.close()
