"""The batch and scene-session store on SQLite and PostgreSQL (skipped where none answers)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from proxy.batches.store import (
    Batch,
    BatchItem,
    BatchStore,
    Scene,
    SceneSession,
    SceneVideo,
    utcnow,
)
from proxy.db import Database


def make_batch(**kw) -> Batch:
    now = kw.pop("created_at", utcnow())
    items = [BatchItem(job_id=str(uuid.uuid4()), prompt=f"p{i}", label=f"l{i}") for i in range(3)]
    return Batch(
        id=kw.pop("id", str(uuid.uuid4())),
        kind=kw.pop("kind", "portal"),
        surface="portal",
        workflow="fastwan_t2v",
        params={"width": 64, "steps": 4},
        items=items,
        created_at=now,
        updated_at=now,
        **kw,
    )


async def test_batches_round_trip_list_and_compare_and_set(database_url):
    db = Database(database_url)
    await db.migrate()
    store = BatchStore(db)
    try:
        t0 = utcnow()
        batches = [
            make_batch(created_at=t0 + timedelta(seconds=i), kind="scenes" if i == 1 else "portal")
            for i in range(3)
        ]
        for batch in batches:
            await store.insert_batch(batch)
        got = await store.get_batch(batches[0].id)
        assert got == batches[0] and got.created_at.tzinfo is not None
        assert got.job_ids == [item.job_id for item in batches[0].items]
        assert await store.get_batch("nope") is None

        assert [b.id for b in await store.list_batches()] == [b.id for b in reversed(batches)]
        assert [b.id for b in await store.list_batches(limit=1, offset=1)] == [batches[1].id]
        assert [b.id for b in await store.list_batches(kind="scenes")] == [batches[1].id]
        assert await store.count_batches() == 3 and await store.count_batches(kind="portal") == 2

        items = list(got.items)
        items[1] = BatchItem(job_id="new-job", prompt="p1", label="l1")
        updated = await store.update_batch(got, items=items, final={"filename": "f.mp4"})
        assert updated.version == got.version + 1
        assert updated.items[1].job_id == "new-job" and updated.final == {"filename": "f.mp4"}
        # A writer holding the old version loses instead of overwriting.
        assert await store.update_batch(got, final=None) is None
        assert (await store.get_batch(got.id)).final == {"filename": "f.mp4"}

        assert await store.delete_batch(got.id)
        assert not await store.delete_batch(got.id)
        assert await store.get_batch(got.id) is None
    finally:
        await db.close()


async def test_scene_sessions_keep_order_and_compare_and_set(database_url):
    db = Database(database_url)
    await db.migrate()
    store = BatchStore(db)
    try:
        now = utcnow()
        # Names chosen so that any key reordering (JSONB sorts keys) would show.
        scenes = [Scene(scenario=n, description=f"{n} shot") for n in ("zeta", "alpha", "mid")]
        params = {"width": 64, "height": 64, "length": 9, "steps": 4}
        session = SceneSession(
            id=str(uuid.uuid4()), scenes=scenes, params=params, created_at=now, updated_at=now
        )
        await store.insert_session(session)
        got = await store.get_session(session.id)
        assert got == session and [s.scenario for s in got.scenes] == ["zeta", "alpha", "mid"]
        assert list(got.params) == ["width", "height", "length", "steps"]
        assert got.scene("alpha").description == "alpha shot" and got.scene("x") is None

        videos = [SceneVideo(scenario="zeta", video_url="/outputs/a.mp4", job_id="a")]
        updated = await store.update_session(got, batch_id="b1", scene_videos=videos)
        assert updated.batch_id == "b1" and updated.scene_videos == videos
        assert await store.update_session(got, batch_id="b2") is None
        assert (await store.get_session(session.id)).batch_id == "b1"
        assert await store.delete_session(session.id)
        assert await store.get_session(session.id) is None
    finally:
        await db.close()
