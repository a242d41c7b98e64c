"""The follow-a-job engine behind SSE and the portal's websockets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from proxy.jobs.bus import EventBus
from proxy.jobs.feed import SNAPSHOT, following
from proxy.jobs.models import Job, JobStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str, status: JobStatus = JobStatus.QUEUED, at: int = 0, **kw: object) -> Job:
    when = T0 + timedelta(seconds=at)
    return Job(
        id=job_id,
        workflow="w",
        status=status,
        params={},
        created_at=T0,
        updated_at=when,
        **kw,  # type: ignore[arg-type]
    )


async def next_change(feed) -> object:
    async with asyncio.timeout(5):
        return await anext(feed.changes)


async def test_snapshot_first_then_only_selected_changes() -> None:
    bus = EventBus()

    async def snapshot() -> list[Job]:
        return [job("a")]

    async with following(bus, select=lambda j: j.id == "a", snapshot=snapshot) as feed:
        assert [(e.kind, e.job.id, e.id) for e in feed.initial] == [(SNAPSHOT, "a", None)]
        bus.publish("updated", job("b", at=1))  # not selected
        bus.publish("updated", job("a", JobStatus.RUNNING, at=2))
        change = await next_change(feed)
        assert (change.kind, change.job.status, change.id) == ("updated", JobStatus.RUNNING, 2)


async def test_a_change_read_before_the_snapshot_never_takes_the_view_back() -> None:
    bus = EventBus()

    async def snapshot() -> list[Job]:
        # While the snapshot is read, an older state of the job is still in flight.
        bus.publish("updated", job("a", JobStatus.QUEUED, at=1))
        return [job("a", JobStatus.RUNNING, at=2)]

    async with following(bus, select=lambda j: True, snapshot=snapshot) as feed:
        assert feed.initial[0].job.status is JobStatus.RUNNING
        bus.publish("updated", job("a", JobStatus.COMPLETED, at=3))
        change = await next_change(feed)
        assert change.job.status is JobStatus.COMPLETED  # the stale QUEUED was dropped


async def test_deletions_always_pass() -> None:
    bus = EventBus()

    async def snapshot() -> list[Job]:
        return [job("a", at=5)]

    async with following(bus, select=lambda j: True, snapshot=snapshot) as feed:
        bus.publish("deleted", job("a", at=1))  # its snapshot is older; it is gone all the same
        assert (await next_change(feed)).kind == "deleted"


async def test_resuming_replays_what_was_missed_without_a_snapshot() -> None:
    bus = EventBus()
    first = bus.publish("created", job("a"))
    bus.publish("created", job("b", at=1))
    bus.publish("updated", job("a", JobStatus.RUNNING, at=2))

    async def snapshot() -> list[Job]:
        raise AssertionError("a replayable client gets no snapshot")

    async with following(
        bus, select=lambda j: j.id == "a", snapshot=snapshot, after=first.id
    ) as feed:
        assert [(e.kind, e.job.status) for e in feed.initial] == [("updated", JobStatus.RUNNING)]
        bus.publish("updated", job("a", JobStatus.COMPLETED, at=3))
        assert (await next_change(feed)).job.status is JobStatus.COMPLETED


async def test_an_id_the_bus_no_longer_holds_gets_a_snapshot() -> None:
    bus = EventBus(replay_size=2)
    for n in range(5):
        bus.publish("updated", job("a", at=n))

    async def snapshot() -> list[Job]:
        return [job("a", at=9)]

    async with following(bus, select=lambda j: True, snapshot=snapshot, after=1) as feed:
        assert [e.kind for e in feed.initial] == [SNAPSHOT]


async def test_leaving_unsubscribes() -> None:
    bus = EventBus()

    async def snapshot() -> list[Job]:
        return []

    async with following(bus, select=lambda j: True, snapshot=snapshot):
        assert len(bus._subscribers) == 1
    assert not bus._subscribers
