"""The job store on SQLite and PostgreSQL (skipped where no PostgreSQL answers)."""

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace

from proxy.db import Database
from proxy.jobs.models import Attempt, Job, JobStatus, OutputRecord
from proxy.jobs.store import JobStore, utcnow


def make_job(**kw):
    now = kw.pop("created_at", utcnow())
    return Job(
        id=kw.pop("id", str(uuid.uuid4())),
        workflow="fastwan_t2v",
        status=kw.pop("status", JobStatus.QUEUED),
        params={"prompt": "x", "seed": 2**63 + 5},
        created_at=now,
        updated_at=now,
        **kw,
    )


async def test_round_trip_and_conditional_updates(database_url):
    db = Database(database_url)
    await db.migrate()
    store = JobStore(db)
    try:
        job = make_job(attempts=[Attempt(number=1, status=JobStatus.QUEUED)])
        await store.insert(job)
        got = await store.get(job.id)
        assert got == job and got.seed == 2**63 + 5
        assert got.created_at.tzinfo is not None

        out = OutputRecord(
            filename="a.mp4",
            content_type="video/mp4",
            size_bytes=3,
            node_id="58",
            comfy_filename="video/x.mp4",
            frames=9,
        )
        done = await store.update(job.id, expect=(JobStatus.RUNNING,), status=JobStatus.COMPLETED)
        assert done is None  # not running: the condition protects newer states
        running = await store.update(job.id, status=JobStatus.RUNNING, prompt_id="p1")
        assert running.status is JobStatus.RUNNING
        assert await store.update(job.id, expect_prompt_id="other", progress=50.0) is None
        done = await store.update(
            job.id,
            expect=(JobStatus.RUNNING,),
            expect_prompt_id="p1",
            status=JobStatus.COMPLETED,
            outputs=[out],
        )
        assert done.outputs == [out] and done.status is JobStatus.COMPLETED
        assert await store.delete(job.id) and await store.get(job.id) is None
    finally:
        await db.close()


async def test_list_filters_and_orders_newest_first(database_url):
    db = Database(database_url)
    await db.migrate()
    store = JobStore(db)
    try:
        t0 = utcnow()
        jobs = [
            make_job(
                created_at=t0 + timedelta(seconds=i),
                client_key="k" if i % 2 else None,
                status=JobStatus.COMPLETED if i == 0 else JobStatus.QUEUED,
                batch_id="b" if i < 2 else None,
            )
            for i in range(4)
        ]
        for job in jobs:
            await store.insert(job)
        assert [j.id for j in await store.list()] == [j.id for j in reversed(jobs)]
        assert [j.id for j in await store.list(limit=2, offset=1)] == [jobs[2].id, jobs[1].id]
        assert len(await store.list(statuses=[JobStatus.QUEUED])) == 3
        assert {j.id for j in await store.list(batch_id="b")} == {jobs[0].id, jobs[1].id}
        assert await store.count(statuses=[JobStatus.QUEUED], client_key="k") == 2
    finally:
        await db.close()


async def test_claim_hands_each_job_to_exactly_one_backend(database_url):
    db = Database(database_url)
    await db.migrate()
    store = JobStore(db)
    try:
        ids = []
        for _ in range(6):
            job = make_job()
            ids.append(job.id)
            await store.insert(job)
        claims = await asyncio.gather(
            *(store.claim_next(lambda _job, b=f"b{i % 3}": b) for i in range(8))
        )
        claimed = [c.id for c in claims if c is not None]
        assert sorted(claimed) == sorted(ids)  # all six, none twice
        assert await store.claim_next(lambda _job: "b0") is None
    finally:
        await db.close()


async def test_recent_jobs_are_served_from_memory_and_stay_what_the_database_holds(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    try:
        store = JobStore(db, cache_size=2)
        jobs = [make_job() for _ in range(3)]
        for job in jobs:
            await store.insert(job)
        assert len(store._cache) == 2 and jobs[0].id not in store._cache  # bounded
        assert await store.get(jobs[0].id) == jobs[0]  # read again from the database

        updated = await store.update(jobs[0].id, status=JobStatus.RUNNING, progress=12.5)
        assert await store.get(jobs[0].id) is updated  # no round trip, and the new state
        fresh = await JobStore(db).get(jobs[0].id)  # what another reader sees
        assert fresh == updated
        assert await store.update(jobs[0].id, expect=[JobStatus.QUEUED], progress=99) is None
        assert (await store.get(jobs[0].id)) == fresh  # a refused update changes nothing

        assert await store.claim_next(lambda job: None) is None  # left queued
        claimed = await store.claim_next(lambda job: "gpu0")
        assert claimed is not None and (await store.get(claimed.id)).backend == "gpu0"

        assert await store.delete(jobs[0].id)
        assert await store.get(jobs[0].id) is None
    finally:
        await db.close()


async def test_a_read_overtaken_by_a_write_does_not_leave_the_older_row_in_memory(tmp_path):
    """A status read that started before a stop was written and ends after it must not put
    the running row back in memory (every later read would show the job running)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.migrate()
    try:
        store = JobStore(db)
        job = make_job()
        await store.insert(job)
        store._cache.clear()  # a job not read since the proxy started
        read, release = asyncio.Event(), asyncio.Event()
        real_connect = db.engine.connect

        class Gated:
            def __init__(self) -> None:
                self.inner = real_connect()

            async def __aenter__(self):
                conn = await self.inner.__aenter__()
                outer = self

                class Conn:
                    async def execute(self, query):
                        result = await conn.execute(query)
                        read.set()
                        await release.wait()
                        return result

                outer.conn = Conn()
                return outer.conn

            async def __aexit__(self, *exc):
                return await self.inner.__aexit__(*exc)

        store.db = SimpleNamespace(engine=SimpleNamespace(connect=Gated))  # type: ignore[assignment]
        slow = asyncio.create_task(store.get(job.id))  # reads, then pauses
        await asyncio.wait_for(read.wait(), 10)
        store.db = db
        stopped = await store.update(job.id, status=JobStatus.CANCELLED)
        release.set()
        assert (await asyncio.wait_for(slow, 10)).status is JobStatus.QUEUED  # it read then
        assert stopped is not None and (await store.get(job.id)).status is JobStatus.CANCELLED
    finally:
        await db.close()
