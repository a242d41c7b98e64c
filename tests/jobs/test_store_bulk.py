"""Many jobs in one transaction (`JobStore.insert_many`, what bench/polling.py stores with),
read back page by page, on SQLite and PostgreSQL."""

from datetime import timedelta

from proxy.db import Database
from proxy.jobs.models import JobStatus
from proxy.jobs.store import JobStore, utcnow
from tests.jobs.test_store import make_job


async def test_insert_many_then_page_through(database_url):
    db = Database(database_url)
    await db.migrate()
    store = JobStore(db)
    try:
        start = utcnow()
        jobs = [
            make_job(
                id=f"job-{n:04d}",
                status=JobStatus.COMPLETED,
                created_at=start + timedelta(seconds=n),
            )
            for n in range(250)
        ]
        await store.insert_many(jobs)
        await store.insert_many([])  # nothing to do, no error
        assert await store.count() == 250
        pages = [await store.list(limit=100, offset=offset) for offset in (0, 100, 200)]
        assert [len(page) for page in pages] == [100, 100, 50]
        ids = [job.id for page in pages for job in page]
        assert ids == [f"job-{n:04d}" for n in reversed(range(250))]  # newest first, each once
        assert await store.get("job-0007") == jobs[7]
    finally:
        await db.close()
