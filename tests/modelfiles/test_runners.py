"""Which process resumes an unfinished model download (`DownloadStore.requeue_running`): with
one process, every one; with replicas, a replica's own, those of no replica, and those of
replicas that are gone, never one that another live replica runs."""

from __future__ import annotations

from proxy.db import Database
from proxy.modelfiles.store import DownloadStatus, DownloadStore


async def _insert(store: DownloadStore, name: str, status: DownloadStatus, runner: str | None):
    return await store.insert(
        model_id=name,
        filename=f"{name}.safetensors",
        folder="loras",
        target_path=f"/models/loras/{name}.safetensors",
        source_url="https://example.test/file",
        status=status.value,
        runner=runner,
    )


async def test_a_replica_resumes_its_own_and_orphaned_downloads_only(database_url):
    db = Database(database_url)
    await db.migrate()
    try:
        store = DownloadStore(db)
        running, queued = DownloadStatus.running, DownloadStatus.queued
        mine = await _insert(store, "mine", running, "a")
        theirs = await _insert(store, "theirs", running, "b")
        old = await _insert(store, "old", running, None)
        orphan = await _insert(store, "orphan", queued, "gone")
        done = await _insert(store, "done", DownloadStatus.completed, "gone")

        resumed = await store.requeue_running("a", live=["a", "b"])
        assert {r.id for r in resumed} == {mine.id, old.id, orphan.id}
        assert all(r.status is queued for r in resumed)
        assert (await store.get(theirs.id)).status is running  # b still runs it
        assert (await store.get(done.id)).status is DownloadStatus.completed

        # b restarts under a new name while a lives: b's download is an orphan now, and
        # the starting replica adopts it; a's are not touched.
        resumed = await store.requeue_running("b2", live=["a", "b2"])
        assert {r.id for r in resumed} == {theirs.id}

        # One process: everything unfinished is its own.
        assert {r.id for r in await store.requeue_running()} == {
            mine.id,
            old.id,
            orphan.id,
            theirs.id,
        }
    finally:
        await db.close()
