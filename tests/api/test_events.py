"""Server-Sent Events: live job changes, and catching up after a reconnect (Last-Event-ID)."""

from __future__ import annotations

import asyncio
import json

import httpx

from proxy.launcher import free_port
from proxy.settings import Settings
from tests.support import proxy_server


async def next_event(lines) -> tuple[str | None, dict]:
    """The next `job` event on an SSE line iterator: (id, data)."""
    event_id = None
    async for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            return event_id, json.loads(line[6:])
    raise AssertionError("stream ended")


async def test_missed_events_are_replayed_after_a_reconnect(tmp_path):
    # No ComfyUI listens there: jobs simply wait in the queue, which is all this test needs.
    settings = Settings(data_dir=tmp_path, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            async with asyncio.timeout(30):
                async with client.stream("GET", "/api/events") as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    lines = stream.aiter_lines()
                    first = (await client.post("/api/jobs", json={"prompt": "one"})).json()
                    event_id, data = await next_event(lines)
                    assert data["event"] == "created" and data["job"]["id"] == first["id"]
                    assert event_id and ":" in event_id

                # Disconnected: these changes happen while nobody listens.
                second = (await client.post("/api/jobs", json={"prompt": "two"})).json()
                await client.post(f"/api/jobs/{first['id']}/stop")

                headers = {"Last-Event-ID": event_id}
                async with client.stream("GET", "/api/events", headers=headers) as stream:
                    lines = stream.aiter_lines()
                    _, missed_1 = await next_event(lines)
                    _, missed_2 = await next_event(lines)
                assert (missed_1["event"], missed_1["job"]["id"]) == ("created", second["id"])
                assert missed_2["job"]["id"] == first["id"]
                assert missed_2["job"]["status"] == "stopped"

                # An id from another process (a proxy restart): a fresh snapshot instead.
                headers = {"Last-Event-ID": "deadbeef:3"}
                async with client.stream("GET", "/api/events", headers=headers) as stream:
                    _, snap = await next_event(stream.aiter_lines())
                assert snap["event"] == "snapshot" and snap["job"]["id"] == second["id"]


async def test_per_job_stream_starts_with_the_current_state_and_404s_unknown_jobs(tmp_path):
    settings = Settings(data_dir=tmp_path, comfyui_urls=[f"http://127.0.0.1:{free_port()}"])
    async with proxy_server(settings) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            assert (await client.get("/api/jobs/nope/events")).status_code == 404
            job = (await client.post("/api/jobs", json={"prompt": "x", "start": False})).json()
            assert job["status"] == "pending"
            async with asyncio.timeout(30):
                async with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
                    lines = stream.aiter_lines()
                    _, snap = await next_event(lines)
                    assert snap["event"] == "snapshot" and snap["job"]["status"] == "pending"
                    await client.post(f"/api/jobs/{job['id']}/start")
                    _, started = await next_event(lines)
                    assert started["job"]["status"] == "queued" and started["job"]["attempt"] == 1
