"""A job's end and its callbacks are one write: the outbox rows are in the transaction that
records the end, so a proxy that dies right after it (before any background work) still owes
the callback, and one that fails writing them still ends the job."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.db import Database
from proxy.jobs.bus import EventBus
from proxy.jobs.models import Job, JobStatus
from proxy.jobs.store import JobStore
from proxy.jobs.writer import JobWriter
from proxy.settings import Settings
from proxy.webhooks import WebhookService
from proxy.webhooks.store import DeliveryStatus, Target
from tests.jobs.test_store import make_job
from tests.webhooks.conftest import SECRET


async def test_the_end_is_written_with_its_outbox_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    await db.migrate()
    try:
        store = JobStore(db)
        writer = JobWriter(store, EventBus())
        settings = Settings(
            data_dir=tmp_path, webhook_url="https://all.example/hook", webhook_secret=SECRET
        )
        hooks = WebhookService(
            settings=settings,
            db=db,
            jobs=store,
            bus=EventBus(),
            render=lambda job, base: {"id": job.id, "base": base},
        )
        writer.end_records.append(hooks.record_end)  # never started: no sender, no task
        job = await writer.create(make_job())
        await hooks.store.save_target(
            job.id, Target("https://mine.example/cb", (), "http://lan:8189"), job.created_at
        )
        await writer.update(job.id, status=JobStatus.RUNNING)
        assert await hooks.deliveries(job.id, limit=10, offset=0) == []

        ended = await writer.update(job.id, status=JobStatus.FAILED, error="boom")
        assert ended is not None and ended.status is JobStatus.FAILED
        rows = await hooks.deliveries(job.id, limit=10, offset=0)
        by_url = {row.target_url: row for row in rows}
        assert set(by_url) == {"https://all.example/hook", "https://mine.example/cb"}
        assert all(r.status is DeliveryStatus.PENDING and r.event == "job.failed" for r in rows)
        # Each payload's URLs under its own target's address (WEBHOOK_URL: the listen one).
        assert '"base":"http://lan:8189"' in by_url["https://mine.example/cb"].payload
        assert '"base":"http://127.0.0.1:8189"' in by_url["https://all.example/hook"].payload
    finally:
        await db.close()


async def test_an_end_record_that_fails_leaves_the_end_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}")
    await db.migrate()
    try:
        writer = JobWriter(JobStore(db), EventBus())
        written: list[str] = []

        async def broken(conn: AsyncConnection, job: Job) -> None:
            await conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
            raise RuntimeError("a defect")

        async def fine(conn: AsyncConnection, job: Job) -> None:
            written.append(job.id)

        writer.end_records += [broken, fine]
        job = await writer.create(make_job())
        with caplog.at_level(logging.ERROR, "proxy.jobs"):
            ended = await writer.update(job.id, status=JobStatus.COMPLETED)
        assert ended is not None and ended.status is JobStatus.COMPLETED
        stored = await JobStore(db).get(job.id)
        assert stored is not None and stored.status is JobStatus.COMPLETED
        assert written == [job.id]
        assert "what its end also records was not written" in caplog.text
        async with db.engine.connect() as conn:  # the failed record's own work was undone
            tables = await conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name = 'half_done'"
            )
            assert tables.first() is None
        # Not an end: no record runs.
        written.clear()
        again = await writer.create(make_job())
        await writer.update(again.id, status=JobStatus.RUNNING)
        assert written == []
    finally:
        await db.close()
