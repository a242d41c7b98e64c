"""The outbox tables on SQLite and PostgreSQL: a repeated enqueue is a no-op, due rows come
longest-due first, and a deleted job keeps only the deliveries still owed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from proxy.db import Database
from proxy.jobs.store import utcnow
from proxy.webhooks.service import delivery_id
from proxy.webhooks.store import DeliveryStatus, Target, WebhookStore


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[WebhookStore]:
    db = Database(database_url)
    await db.migrate()
    try:
        yield WebhookStore(db)
    finally:
        await db.close()


def row(job_id: str, key: str, url: str = "https://h.test/", **kw: Any) -> dict[str, Any]:
    now = kw.pop("now", utcnow())
    return {
        "id": delivery_id(job_id, key, url),
        "job_id": job_id,
        "target_url": url,
        "event": "job.completed",
        "payload": '{"type":"job.completed"}',
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "attempt_log": [],
        "next_attempt_at": now,
        "expires_at": now + timedelta(hours=1),
        "created_at": now,
        **kw,
    }


async def test_the_same_event_enqueued_twice_is_one_delivery(store: WebhookStore) -> None:
    first = row("j1", "1:job.completed")
    await store.enqueue([first])
    await store.enqueue([first, row("j1", "1:job.completed", "https://other.test/")])
    rows = await store.list_for_job("j1", limit=10, offset=0)
    assert sorted(r.target_url for r in rows) == ["https://h.test/", "https://other.test/"]
    assert await store.count_for_job("j1") == 2
    assert delivery_id("j1", "1:job.completed", "https://h.test/") == first["id"]
    assert delivery_id("j1", "2:job.completed", "https://h.test/") != first["id"]


async def test_due_rows_come_longest_due_first_and_skip_those_being_sent(
    store: WebhookStore,
) -> None:
    now = utcnow()
    await store.enqueue(
        [
            row("j", "a", next_attempt_at=now - timedelta(seconds=5), now=now),
            row("j", "b", next_attempt_at=now - timedelta(seconds=9), now=now),
            row("j", "c", next_attempt_at=now + timedelta(seconds=30), now=now),
        ]
    )
    a, b, c = (delivery_id("j", key, "https://h.test/") for key in "abc")
    assert [d.id for d in await store.due(now, 10, [])] == [b, a]
    assert [d.id for d in await store.due(now, 1, [b])] == [a]
    # Claimed (another replica reading the outbox leaves them alone until the hold ends).
    assert [d.id for d in await store.due(now, 10, [], hold_s=60)] == [b, a]
    assert await store.due(now, 10, []) == []
    # Due again once the hold ends (the claimer died without recording an outcome).
    after = await store.due(now + timedelta(seconds=61), 10, [])
    assert [d.id for d in after][0] == c and {d.id for d in after} == {a, b, c}
    assert await store.next_due([a, b]) == now + timedelta(seconds=30)
    await store.record(c, status=DeliveryStatus.DELIVERED.value, next_attempt_at=None)
    assert await store.next_due([a, b]) is None

    rescheduled = await store.reschedule("j", c, now, now + timedelta(hours=2))
    assert rescheduled is not None and rescheduled.status is DeliveryStatus.PENDING
    assert rescheduled.next_attempt_at == now
    assert await store.reschedule("another job", c, now, now) is None


async def test_a_deleted_job_keeps_only_the_deliveries_still_owed(store: WebhookStore) -> None:
    now = utcnow()
    await store.save_target("j", Target("https://h.test/", ("job.started",)), now)
    await store.save_target("j", Target("https://h.test/", ("job.progress",)), now)
    assert await store.targets_of("j") == [Target("https://h.test/", ("job.progress",))]
    await store.enqueue([row("j", "sent"), row("j", "owed")])
    sent = delivery_id("j", "sent", "https://h.test/")
    await store.record(sent, status=DeliveryStatus.DELIVERED.value, delivered_at=now)
    await store.forget_job("j")
    assert await store.targets_of("j") == []
    assert [d.id for d in await store.list_for_job("j", limit=10, offset=0)] == [
        delivery_id("j", "owed", "https://h.test/")
    ]


async def test_finished_deliveries_are_pruned_by_age(store: WebhookStore) -> None:
    old = utcnow() - timedelta(days=8)
    await store.enqueue(
        [
            row("j", "old-done", now=old, status=DeliveryStatus.FAILED.value),
            row("j", "old-owed", now=old),
            row("j", "new-done", status=DeliveryStatus.DELIVERED.value),
        ]
    )
    assert await store.prune(utcnow() - timedelta(days=7)) == 1
    left = {d.id for d in await store.list_for_job("j", limit=10, offset=0)}
    assert left == {delivery_id("j", key, "https://h.test/") for key in ("old-owed", "new-done")}
