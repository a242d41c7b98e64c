"""`webhook_url` on a create call (native and the FastWAN seed): checked before any job
exists, then that job's events are delivered there, signed."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from proxy.settings import Settings
from tests.support import follow_job, proxy_server
from tests.webhooks.conftest import SECRET, SMALL, WAIT_S, Receiver

FASTWAN_SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4}


async def test_a_create_call_with_a_webhook_url_gets_its_callbacks(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    async with proxy_server(make_settings(webhook_secret=SECRET)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            native = await client.post(
                "/api/jobs",
                json={
                    "prompt": "call me",
                    **SMALL,
                    "webhook_url": f"{receiver.url}/n8n/resume",
                    "webhook_events": ["job.started"],
                },
            )
            assert native.status_code == 201, native.text
            assert "webhook_url" not in native.json()["params"]  # not a workflow parameter
            fastwan = await client.post(
                "/generate",
                json={"prompt": "me too", **FASTWAN_SMALL, "webhook_url": f"{receiver.url}/z"},
            )
            assert fastwan.status_code == 200, fastwan.text
            for job_id in (native.json()["id"], fastwan.json()["job_id"]):
                await follow_job(client, job_id, {"completed", "failed"}, WAIT_S)

            [done_native] = await receiver.wait_for(
                1, lambda r: r.path == "/n8n/resume" and r.payload["type"] == "job.completed"
            )
            assert done_native.verified(SECRET)["data"]["id"] == native.json()["id"]
            assert receiver.of_type("job.started")  # asked for on the native call
            [done_fastwan] = await receiver.wait_for(1, lambda r: r.path == "/z")
            payload = done_fastwan.verified(SECRET)
            assert payload["type"] == "job.completed"
            assert payload["data"]["id"] == fastwan.json()["job_id"]


async def test_a_bad_webhook_is_refused_before_any_job(
    make_settings: Callable[..., Settings],
) -> None:
    async with proxy_server(make_settings(webhook_secret=SECRET)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for body, field in (
                ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
                ({"webhook_url": "http://example.com/x", "webhook_events": ["job.lunch"]},
                 "webhook_events"),
                ({"webhook_events": ["job.started"]}, "webhook_events"),
            ):  # fmt: skip
                answer = await client.post("/generate", json={"prompt": "x", **body})
                assert answer.status_code == 422, answer.text
                assert answer.json()["field"] == field
            assert (await client.get("/api/jobs")).json()["total"] == 0


async def test_the_other_seeds_take_a_webhook_url_too(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    async with proxy_server(make_settings(webhook_secret=SECRET)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            wan = await client.post(
                "/api/v1/generate/text-to-video",
                json={"prompt": "wan", "width": 64, "height": 64, "num_frames": 9,
                      "webhook_url": f"{receiver.url}/wan"},
            )  # fmt: skip
            portal = await client.post(
                "/api/video/single_inference",
                json={"prompt": "portal", **FASTWAN_SMALL, "webhook_url": f"{receiver.url}/p"},
            )
            assert wan.status_code == 200 and portal.status_code == 200, (wan.text, portal.text)
            for path, job_id in (("/wan", wan.json()["job_id"]), ("/p", portal.json()["job_id"])):
                [hook] = await receiver.wait_for(1, lambda r, path=path: r.path == path)
                assert hook.verified(SECRET)["data"]["id"] == job_id


async def test_with_a_public_url_the_callback_carries_an_absolute_video_url(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = make_settings(webhook_secret=SECRET, public_url="https://videos.example.com/")
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            made = await client.post(
                "/api/jobs",
                json={"prompt": "far away", **SMALL, "webhook_url": f"{receiver.url}/abs"},
            )
            job_id = made.json()["id"]
            [hook] = await receiver.wait_for(1, lambda r: r.path == "/abs")
    data = hook.verified(SECRET)["data"]
    assert data["video_url"] == f"https://videos.example.com/api/jobs/{job_id}/video"


def test_a_public_url_that_is_not_an_address_is_refused() -> None:
    with pytest.raises(ValidationError, match="PUBLIC_URL"):
        Settings(public_url="videos.example.com")
