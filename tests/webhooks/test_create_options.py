"""`webhook_url` on a create call (native and the FastWAN seed): checked before any job
exists, then that job's events are delivered there, signed."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image
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


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


async def test_uploads_batches_and_scenes_take_a_webhook_url_too(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    async with proxy_server(make_settings(webhook_secret=SECRET)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # Multipart: the events as one comma-separated text field.
            upload = await client.post(
                "/api/v1/generate/image-to-video",
                files={"image": ("still.jpg", _jpeg(), "image/jpeg")},
                data={"prompt": "from a still", "num_frames": "9", "width": "64",
                      "height": "64", "webhook_url": f"{receiver.url}/i2v",
                      "webhook_events": "job.started"},
            )  # fmt: skip
            assert upload.status_code == 200, upload.text
            batch = await client.post(
                "/api/video/batch_inference",
                json={"prompts": ["one", "two"], **FASTWAN_SMALL,
                      "webhook_url": f"{receiver.url}/batch"},
            )  # fmt: skip
            assert batch.status_code == 200, batch.text
            session = await client.post(
                "/api/session", json={"scenes": {"hook": "a", "cta": "b"}, **FASTWAN_SMALL}
            )
            scenes = await client.post(
                "/api/videos/generate-scenes",
                json={"session_id": session.json()["session_id"],
                      "webhook_url": f"{receiver.url}/scenes"},
            )  # fmt: skip
            assert scenes.status_code == 200, scenes.text

            def ended(path: str) -> Callable[[Any], bool]:
                return lambda r: r.path == path and r.payload["type"] == "job.completed"

            [i2v] = await receiver.wait_for(1, ended("/i2v"))
            assert i2v.verified(SECRET)["data"]["id"] == upload.json()["job_id"]
            assert [r for r in receiver.received if r.path == "/i2v"][0].payload["type"] == (
                "job.started"
            )
            status = await client.get(f"/api/video/batch_status/{batch.json()['batch_id']}")
            batch_jobs = {j["job_id"] for j in status.json()["jobs"]}
            told = await receiver.wait_for(2, ended("/batch"))
            assert {r.verified(SECRET)["data"]["id"] for r in told} == batch_jobs
            scene_status = await client.get(f"/api/videos/status/{scenes.json()['job_id']}")
            scene_jobs = {s["job_id"] for s in scene_status.json()["scenes"]}
            told = await receiver.wait_for(2, ended("/scenes"))
            assert {r.verified(SECRET)["data"]["id"] for r in told} == scene_jobs
            # A bad target on a multipart call is refused before any job.
            refused = await client.post(
                "/api/v1/generate/image-to-video",
                files={"image": ("still.jpg", _jpeg(), "image/jpeg")},
                data={"prompt": "x", "webhook_url": "ftp://example.com/"},
            )
            assert refused.status_code == 400 and "webhook_url" in refused.text  # the seed: 400
            total = (await client.get("/api/jobs")).json()["total"]
            assert total == 5


async def test_callback_urls_are_under_the_create_calls_address_and_signed(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = make_settings(webhook_secret=SECRET, api_keys=["zap:kz"])
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            made = await client.post(
                "/api/jobs",
                json={"prompt": "zap", **SMALL, "webhook_url": f"{receiver.url}/zap"},
                headers={"X-API-Key": "kz", "Host": f"localhost:{server.settings.port}"},
            )
            assert made.status_code == 201, made.text
            job_id = made.json()["id"]
            [hook] = await receiver.wait_for(1, lambda r: r.path == "/zap")
    data = hook.verified(SECRET)["data"]
    base = f"http://localhost:{server.settings.port}"
    assert data["video_url"] == f"{base}/api/jobs/{job_id}/video"
    assert data["signed_url"].startswith(f"{base}/api/jobs/{job_id}/video?expires=")
    async with proxy_server(settings) as again, httpx.AsyncClient(timeout=30) as bare:
        # A Zapier file field fetches it with no header at all (here from the next proxy).
        port = again.settings.port
        url = data["signed_url"].replace(f":{server.settings.port}/", f":{port}/")
        video = await bare.get(url)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
