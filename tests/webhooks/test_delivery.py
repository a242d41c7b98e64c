"""Callbacks end to end: real jobs on the stand-in ComfyUI, the proxy on a loopback port, and
a loopback receiver that verifies every signature with the Standard Webhooks verifier."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from proxy.services import Services
from proxy.settings import Settings
from proxy.webhooks import WebhookService
from tests.support import ProxyServer, closed_port_url, follow_job, proxy_server
from tests.webhooks.conftest import (
    SECRET,
    SMALL,
    WAIT_S,
    Receiver,
    Reply,
    deliveries,
    run_job,
)

MakeSettings = Callable[..., Settings]


def services(server: ProxyServer) -> Services:
    return server.app.state.services  # type: ignore[attr-defined,no-any-return]


def webhooks(server: ProxyServer) -> WebhookService:
    return services(server).webhooks


async def settled(server: ProxyServer, job_id: str) -> list[Any]:
    """The job's deliveries once none is pending any more."""
    hooks = webhooks(server)
    async with asyncio.timeout(WAIT_S):
        return await hooks.settled(job_id)


async def test_a_finished_job_is_delivered_signed(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    settings = make_settings(webhook_url=f"{receiver.url}/hooks/all", webhook_secret=SECRET)
    async with proxy_server(settings) as server, httpx.AsyncClient(base_url=server.url) as client:
        job_id = await run_job(client)
        (call,) = await receiver.wait_for(1)
        payload = call.verified(SECRET)
        assert payload["type"] == "job.completed"
        datetime.fromisoformat(payload["timestamp"])
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        assert payload["data"]["id"] == job_id and payload["data"]["status"] == "completed"
        # Absolute, under the address the proxy listens on (no PUBLIC_URL, no create call).
        video_url = f"{server.url}/api/jobs/{job_id}/video"
        assert payload["data"]["video_url"] == job["video_url"] == video_url
        assert call.path == "/hooks/all"
        assert call.id.startswith("msg_")
        assert call.headers["Content-Type"] == "application/json"
        assert call.headers["User-Agent"].startswith("fastwan-proxy/")

        (row,) = await settled(server, job_id)
        assert row.id == call.id
        (listed,) = await deliveries(client, job_id)
        assert listed["id"] == call.id and listed["event"] == "job.completed"
        assert listed["url"] == f"{receiver.url}/hooks/all"
        assert listed["status"] == "delivered" and listed["attempts"] == 1
        assert listed["last_status_code"] == 200 and listed["last_error"] is None
        assert listed["delivered_at"] and listed["next_attempt_at"] is None
        secret = (await client.get("/api/webhooks/secret")).json()
        assert secret == {"secret": SECRET, "source": "WEBHOOK_SECRET"}
    assert len(receiver.received) == 1


async def test_503s_then_200_is_delivered_once_with_every_attempt_listed(
    make_settings: MakeSettings, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.plan = [Reply(503), Reply(503), Reply(502)]
    async with proxy_server(make_settings(webhook_url=receiver.url)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            job_id = await run_job(client)
            calls = await receiver.wait_for(4)
            (row,) = await settled(server, job_id)
            (listed,) = await deliveries(client, job_id)
            # No WEBHOOK_SECRET: one was made, kept owner-only, and is what admins read.
            secret = (await client.get("/api/webhooks/secret")).json()
    assert secret["source"] == "generated"
    kept = tmp_path / "data" / "webhook-secret"
    assert kept.read_text().strip() == secret["secret"]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # One delivery: the same id and body on every attempt, each signed afresh.
    assert len({c.id for c in calls}) == 1 and len({c.body for c in calls}) == 1
    for call in calls:
        assert call.verified(secret["secret"])["type"] == "job.completed"
    assert len(receiver.received) == 4
    assert listed["status"] == "delivered" and listed["attempts"] == 4
    assert [a["status_code"] for a in listed["attempt_log"]] == [503, 503, 502, 200]
    assert listed["last_status_code"] == 200 and row.attempts == 4


async def test_a_pending_delivery_is_sent_by_the_next_proxy_after_a_restart(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    receiver.plan = [Reply(503)]
    # The first proxy's backoff is long: it stops between the attempts.
    first = make_settings(
        webhook_url=receiver.url, webhook_retry_min_s=3.0, webhook_retry_max_s=3.0
    )
    async with proxy_server(first) as server, httpx.AsyncClient(base_url=server.url) as client:
        job_id = await run_job(client)
        (failed_call,) = await receiver.wait_for(1)
        async with asyncio.timeout(WAIT_S):  # the first outcome of this process, recorded
            await webhooks(server).outbox.wait_for_outcome(0)  # type: ignore[union-attr]
        (row,) = await deliveries(client, job_id)
        assert row["status"] == "pending" and row["attempts"] == 1, row
        assert row["last_status_code"] == 503 and row["next_attempt_at"]
    assert len(receiver.received) == 1

    async with proxy_server(make_settings(webhook_url=receiver.url)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            (delivered_call,) = await receiver.wait_for(1, lambda r: r is not failed_call)
            (row,) = await settled(server, job_id)
            secret = (await client.get("/api/webhooks/secret")).json()["secret"]
    assert delivered_call.id == failed_call.id and delivered_call.body == failed_call.body
    # The secret made by the first proxy signs for the second too.
    assert failed_call.verified(secret) == delivered_call.verified(secret)
    assert row.status.value == "delivered" and row.attempts == 2
    assert [a["status_code"] for a in row.attempt_log] == [503, 200]


async def test_a_receiver_down_past_the_horizon_fails_and_nothing_else_suffers(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    down = closed_port_url()
    settings = make_settings(webhook_url=f"{down}/hook", webhook_retry_horizon_s=1.0)
    async with proxy_server(settings) as server, httpx.AsyncClient(base_url=server.url) as client:
        first = await run_job(client, "one")
        second_job = await client.post("/api/jobs", json={"prompt": "two", **SMALL})
        second = second_job.json()["id"]
        await webhooks(server).subscribe(second, f"{receiver.url}/mine", None)
        await follow_job(client, second, {"completed"}, WAIT_S)
        (to_receiver,) = await receiver.wait_for(1)
        assert to_receiver.payload["data"]["id"] == second
        (gone,) = await settled(server, first)
        both = {row.target_url: row for row in await settled(server, second)}
        # The proxy went on serving meanwhile.
        assert (await client.get("/health")).status_code == 200
        third = await run_job(client, "three")
    assert gone.status.value == "failed" and gone.attempts >= 2
    assert gone.last_status_code is None and "given up after" in (gone.last_error or "")
    assert "ConnectError" in (gone.last_error or "")
    assert both[f"{receiver.url}/mine"].status.value == "delivered"
    assert both[f"{down}/hook"].status.value == "failed"
    assert third and len(receiver.received) == 1


async def test_a_4xx_fails_at_once_and_a_manual_retry_sends_it_again(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    receiver.plan = [Reply(410)]
    async with proxy_server(make_settings(webhook_url=receiver.url)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            job_id = await run_job(client)
            (row,) = await settled(server, job_id)
            assert row.status.value == "failed" and row.attempts == 1
            assert row.last_status_code == 410 and row.last_error == "HTTP 410"
            assert len(receiver.received) == 1

            retried = await client.post(f"/api/jobs/{job_id}/webhooks/{row.id}/retry")
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "pending" and retried.json()["id"] == row.id
            (row,) = await settled(server, job_id)
            assert row.status.value == "delivered" and row.attempts == 2
            assert [c.id for c in receiver.received] == [row.id, row.id]

            unknown = await client.post(f"/api/jobs/{job_id}/webhooks/msg_nothing/retry")
            assert unknown.status_code == 404 and "msg_nothing" in unknown.json()["error"]
            missing = await client.get("/api/jobs/no-such-job/webhooks")
            assert missing.status_code == 404


async def test_a_redirect_is_not_followed(
    make_settings: MakeSettings, receiver: Receiver, other_receiver: Receiver
) -> None:
    receiver.default = Reply(307, {"Location": f"{other_receiver.url}/elsewhere"})
    async with proxy_server(make_settings(webhook_url=receiver.url)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            job_id = await run_job(client)
            (row,) = await settled(server, job_id)
    assert row.status.value == "failed" and row.attempts == 1 and row.last_status_code == 307
    assert "redirects are not followed" in (row.last_error or "")
    assert len(receiver.received) == 1 and other_receiver.received == []


async def test_a_target_named_after_the_job_ended_still_hears_of_it(
    make_settings: MakeSettings, receiver: Receiver
) -> None:
    async with proxy_server(make_settings()) as server, httpx.AsyncClient(base_url=server.url) as c:
        job_id = await run_job(c)
        assert await deliveries(c, job_id) == []  # no WEBHOOK_URL, no target yet
        await webhooks(server).subscribe(job_id, receiver.url, ["job.started"])
        await webhooks(server).subscribe(job_id, receiver.url, None)  # the same target again
        (call,) = await receiver.wait_for(1)
        assert call.payload["type"] == "job.completed"
        (row,) = await settled(server, job_id)
        assert row.status.value == "delivered"

        # Deleting the job deletes its targets and its finished deliveries.
        assert (await c.delete(f"/api/jobs/{job_id}")).status_code == 200
        hooks = webhooks(server)
        assert await hooks.store.targets_of(job_id) == []
        assert await hooks.store.list_for_job(job_id, limit=10, offset=0) == []
    assert len(receiver.received) == 1


async def test_started_and_throttled_progress_go_to_the_targets_that_ask(
    make_settings: MakeSettings, receiver: Receiver, other_receiver: Receiver
) -> None:
    interval = 0.4
    settings = make_settings(
        webhook_url=other_receiver.url,  # terminal events only
        webhook_progress_interval_s=interval,
    )
    async with proxy_server(settings) as server, httpx.AsyncClient(base_url=server.url) as client:
        created = await client.post(
            "/api/jobs", json={"prompt": "slow", **SMALL, "num_inference_steps": 30}
        )
        job_id = created.json()["id"]
        await webhooks(server).subscribe(job_id, receiver.url, ["job.started", "job.progress"])
        _, seen = await follow_job(client, job_id, {"completed"}, WAIT_S)
        await receiver.wait_for(1, lambda r: r.payload["type"] == "job.completed")
        await settled(server, job_id)
    types = [r.payload["type"] for r in receiver.received]
    assert types.count("job.started") == 1 and types.count("job.completed") == 1
    progress = receiver.of_type("job.progress")
    final = seen[-1]
    running_s = (
        datetime.fromisoformat(final["finished_at"]) - datetime.fromisoformat(final["started_at"])
    ).total_seconds()
    steps_seen = {view["step"] for view in seen if view.get("step")}
    # The stand-in reports each of 30 steps; at most one callback per interval goes out.
    assert len(steps_seen) > len(progress) >= 2, (steps_seen, len(progress))
    assert len(progress) <= running_s / interval + 1, (len(progress), running_s)
    stamps = [datetime.fromisoformat(r.payload["timestamp"]) for r in progress]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(gap >= interval - 0.05 for gap in gaps), gaps
    assert all(r.payload["data"]["status"] == "running" for r in progress)
    assert len({r.id for r in receiver.received}) == len(receiver.received)
    # WEBHOOK_URL asked for nothing extra.
    assert [r.payload["type"] for r in other_receiver.received] == ["job.completed"]
