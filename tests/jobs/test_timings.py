"""Learned node durations: kept across a restart, averaged, and found for a new backend or
a new size (SQLite and PostgreSQL, skipped where no PostgreSQL answers)."""

import pytest

from proxy.db import Database
from proxy.jobs.timings import STORE_NODE, SizeClass, TimingStore

BIG = SizeClass.of({"width": 1280, "height": 704, "length": 121, "steps": 8})
SMALL = SizeClass.of({"width": 64, "height": 64, "length": 5, "steps": 8})
RUN = {"3": ("KSampler", 2.6), "8": ("VAEDecode", 10.5), STORE_NODE: (STORE_NODE, 0.2)}


def test_a_size_class_reads_the_job_parameters():
    assert BIG.key == "1280x704x121/8"
    assert SizeClass.from_key(BIG.key) == BIG
    odd = SizeClass.of({"width": 512, "num_frames": 33, "steps": True, "prompt": "x"})
    assert odd.key == "512x-x33/-" and SizeClass.from_key(odd.key) == odd
    assert SMALL.work < BIG.work


async def test_what_was_learned_survives_a_restart_and_is_averaged(database_url):
    db = Database(database_url)
    await db.migrate()
    try:
        store = TimingStore(db)
        assert await store.expected("gpu0", "fastwan_t2v", BIG) is None
        await store.record("gpu0", "fastwan_t2v", BIG, RUN)

        again = TimingStore(db)  # a new process: nothing cached
        found = await again.expected("gpu0", "fastwan_t2v", BIG)
        assert found is not None and found.source == "this size"
        assert found.seconds == {"3": 2.6, "8": 10.5, STORE_NODE: 0.2}

        await again.record("gpu0", "fastwan_t2v", BIG, {"8": ("VAEDecode", 12.5)})
        found = await TimingStore(db).expected("gpu0", "fastwan_t2v", BIG)
        assert found is not None
        assert found.seconds["8"] == pytest.approx(11.5) and found.seconds["3"] == 2.6

        [entry] = await TimingStore(db).learned("fastwan_t2v")
        assert entry["backend"] == "gpu0" and entry["size"]["width"] == 1280
        assert entry["runs"] == 2 and entry["total_s"] == pytest.approx(14.3)
        decode = next(n for n in entry["nodes"] if n["node_id"] == "8")
        assert decode == {"node_id": "8", "class_type": "VAEDecode", "seconds": 11.5, "samples": 2}
    finally:
        await db.close()


async def test_a_new_backend_or_size_borrows_the_nearest_figures(database_url):
    db = Database(database_url)
    await db.migrate()
    try:
        store = TimingStore(db)
        await store.record("gpu0", "fastwan_t2v", BIG, RUN)
        await store.record("gpu0", "fastwan_t2v", SMALL, {"8": ("VAEDecode", 0.1)})

        other = await store.expected("gpu1", "fastwan_t2v", BIG)
        assert other is not None and other.source == "this size, another backend"
        assert other.seconds["8"] == 10.5

        mid = SizeClass.of({"width": 1024, "height": 576, "length": 121, "steps": 8})
        near = await store.expected("gpu0", "fastwan_t2v", mid)
        assert near is not None and near.source == "nearest size" and near.seconds["8"] == 10.5

        tiny = SizeClass.of({"width": 32, "height": 32, "length": 5, "steps": 8})
        near = await store.expected("gpu0", "fastwan_t2v", tiny)
        assert near is not None and near.seconds == {"8": 0.1}

        assert await store.expected("gpu0", "fastwan_i2v", BIG) is None  # another workflow
    finally:
        await db.close()


async def test_a_node_whose_class_changed_starts_over(database_url):
    """The workflow was edited: node 8 is another class now; its old average is dropped."""
    db = Database(database_url)
    await db.migrate()
    try:
        store = TimingStore(db)
        await store.record("gpu0", "fastwan_t2v", BIG, RUN)
        await store.record("gpu0", "fastwan_t2v", BIG, {"8": ("VAEDecodeTiled", 4.0)})
        [entry] = await store.learned("fastwan_t2v")
        decode = next(n for n in entry["nodes"] if n["node_id"] == "8")
        assert decode["class_type"] == "VAEDecodeTiled" and decode["samples"] == 1
        assert decode["seconds"] == 4.0
    finally:
        await db.close()


async def test_runs_recorded_at_once_do_not_collide(database_url):
    """Two jobs (or two replicas) ending together record the same nodes at once."""
    import asyncio

    db = Database(database_url)
    await db.migrate()
    try:
        stores = [TimingStore(db) for _ in range(4)]  # each as a fresh process would
        await asyncio.gather(*(s.record("gpu0", "fastwan_t2v", BIG, RUN) for s in stores))
        found = await TimingStore(db).expected("gpu0", "fastwan_t2v", BIG)
        assert found is not None and found.seconds["3"] == 2.6
    finally:
        await db.close()
