"""Seed 002 (the Wan2.1 Video Server API) against a real proxy and the stand-in ComfyUI:
every endpoint, every kind of bad input, the seed's codes and `{"error": ...}` bodies."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from proxy.jobs.models import ACTIVE
from proxy.modelfiles import DownloadManager
from proxy.modelfiles.manifest import load_manifest
from proxy.modelfiles.store import DownloadRecord, DownloadStatus
from proxy.services import Services
from proxy.settings import Settings
from proxy.testing import job_views
from tests.support import (
    MANIFEST,
    REPO_ROOT,
    StandinProcess,
    proxy_server,
    require_shared,
    standin_process,
)

SEED_002 = REPO_ROOT.parent / "shared" / "seeds" / "002_15ab1982266d0a07.txt"
SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 25}
SMALL_FORM = {k: str(v) for k, v in SMALL.items()}


def png_bytes(size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 220)).save(buf, format="PNG")
    return buf.getvalue()


def mp4_bytes(frames: int = 14, size: tuple[int, int] = (96, 64), fps: int = 12) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((size[1], size[0], 3), i * 15 % 255, dtype=np.uint8), format="rgb24"
            )
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@dataclass
class Api:
    client: httpx.AsyncClient
    services: Services
    settings: Settings
    url: str

    async def native_job(self, job_id: str) -> dict[str, Any]:
        return (await self.client.get(f"/api/jobs/{job_id}")).json()

    def uploads(self) -> list[str]:
        folder = self.settings.uploads_path
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@asynccontextmanager
async def running(settings: Settings, *, wait_up: bool = True) -> AsyncIterator[Api]:
    """The proxy with a client; on the way out, jobs still active are stopped, so the shared
    stand-in is idle for the next test."""
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/health")).status_code == 200  # the lifespan has run
            services: Services = server.app.state.services  # type: ignore[attr-defined]
            if wait_up:
                for backend in services.pool.backends:
                    assert await backend.socket.wait_connected(10)
            try:
                yield Api(client, services, server.settings, server.url)
            finally:
                for job in await services.jobs.list(statuses=ACTIVE):
                    await services.jobs.stop(job.id)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinProcess]:
    """One stand-in for the module (each test has its own proxy and data folder)."""
    with standin_process(tmp_path_factory.mktemp("comfy"), step_seconds=0) as proc:
        yield proc


@pytest.fixture
async def api(standin: StandinProcess, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[standin.url])
    async with running(settings) as value:
        yield value


def assert_error(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body


async def follow(api: Api, job_id: str, until: set[str], timeout_s: float = 60) -> dict[str, Any]:
    """Wait on the SSE stream, then read the job through the seed's endpoint."""
    async with asyncio.timeout(timeout_s):
        async with api.client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
            async for job in job_views(stream.aiter_lines()):
                if job["status"] in until:
                    break
    return (await api.client.get(f"/api/v1/job/{job_id}")).json()


# -- health and model info -------------------------------------------------------------------


async def test_health(api: Api) -> None:
    body = (await api.client.get("/health")).json()
    assert body["status"] == "healthy" and body["service"] == "wan2-video-server"
    assert body["version"] and body["backends_up"] == 1


async def test_model_info_reads_the_devices_of_the_first_backend(api: Api) -> None:
    body = (await api.client.get("/api/v1/model/info")).json()
    assert body["gpu_enabled"] is False and body["gpu_device_id"] is None  # the stand-in: CPU
    assert {"name", "version", "provider", "cache_dir"} <= set(body)

    async def cuda_stats() -> dict[str, Any]:
        return {"devices": [{"name": "cuda:1 NVIDIA L4", "type": "cuda", "index": 1}]}

    api.services.pool.backends[0].client.system_stats = cuda_stats  # type: ignore[method-assign]
    body = (await api.client.get("/api/v1/model/info")).json()
    assert body["gpu_enabled"] is True and body["gpu_device_id"] == 1
    assert body["gpu_name"] == "cuda:1 NVIDIA L4"


async def test_no_backend_is_503(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=["http://127.0.0.1:9"])
    async with running(settings, wait_up=False) as api:
        assert_error(await api.client.get("/api/v1/model/info"), 503, "Model not loaded")
        r = await api.client.post("/api/v1/generate/text-to-video", json={"prompt": "x"})
        assert_error(r, 503, "no ComfyUI backend")
        r = await api.client.post(
            "/api/v1/generate/image-to-video", files={"image": ("a.png", png_bytes(), "image/png")}
        )
        assert_error(r, 503)
        assert api.uploads() == []
        assert (await api.client.get("/api/jobs")).json()["total"] == 0


async def test_uploads_a_killed_proxy_left_unfinished_are_removed_at_start(tmp_path: Path) -> None:
    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "0123abcd.part").write_bytes(b"half an upload")
    (uploads / "4567cdef.png").write_bytes(png_bytes())  # a finished one, kept for its job
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=["http://127.0.0.1:9"])
    async with running(settings, wait_up=False):
        assert sorted(p.name for p in uploads.iterdir()) == ["4567cdef.png"]


# -- text to video -------------------------------------------------------------------------


async def test_text_to_video_maps_the_seed_fields_and_completes(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/text-to-video",
        json={
            "prompt": "A cat playing with a ball of yarn",
            "negative_prompt": "blurry",
            "num_frames": 10,
            "fps": 8,
            "width": 64,
            "height": 96,
            "seed": 42,
            "guidance_scale": 6.0,
            "num_inference_steps": 25,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "pending" and body["seed"] == 42 and body["num_frames"] == 9
    # Sent explicitly, the seed's steps and guidance are honoured, with a note on each.
    assert body["message"].startswith(
        "Video generation started (num_frames 10 → 9: the model makes 4k+1 frames; "
        "num_inference_steps 25: this model is distilled for 8 steps"
    )
    assert "guidance_scale 6: this model is tuned for 1" in body["message"]
    params = (await api.native_job(body["job_id"]))["params"]
    assert params | {"seed": 42} == params
    assert (params["length"], params["cfg"], params["steps"], params["fps"]) == (9, 6.0, 25, 8)
    assert (params["width"], params["height"], params["negative_prompt"]) == (64, 96, "blurry")

    job = await follow(api, body["job_id"], {"completed", "failed"})
    assert job["status"] == "completed" and job["message"] == "Generation complete"
    name = f"{body['job_id']}.mp4"
    assert (
        job["output_path"] == f"./outputs/{name}"
        and job["output_url"] == f"{api.client.base_url}/outputs/{name}"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["created_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["updated_at"])
    assert job["num_frames"] == 9 and job["progress"] == 100

    video = await api.client.get(job["output_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    part = await api.client.get(job["output_url"], headers={"range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == video.content[:10]
    head = await api.client.head(job["output_url"])
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(video.content)


async def test_text_to_video_defaults_are_the_seeds_except_steps_and_guidance(api: Api) -> None:
    r = await api.client.post("/api/v1/generate/text-to-video", json={"prompt": "defaults"})
    body = r.json()
    assert body["num_frames"] == 61 and "64 → 61" in body["message"]
    assert "distilled" not in body["message"]  # nothing sent outside the model's regime
    job = await api.native_job(body["job_id"])
    params = job["params"]
    assert (params["width"], params["height"], params["fps"]) == (512, 512, 24)
    # The seed's 7.5 and 50 would make FastWAN 6x slower and over-guided: its own defaults.
    assert (params["cfg"], params["steps"], params["length"]) == (1.0, 8, 61)
    assert isinstance(params["seed"], int) and params["seed"] >= 0  # -1 → drawn at random
    assert job["surface"] == "wan21"
    await api.client.post(f"/api/jobs/{body['job_id']}/stop")


async def test_seed_minus_one_is_random_and_stored(api: Api) -> None:
    seeds = []
    for _ in range(2):
        r = await api.client.post(
            "/api/v1/generate/text-to-video", json={"prompt": "x", "seed": -1, **SMALL}
        )
        seeds.append(r.json()["seed"])
        status = (await api.client.get(f"/api/v1/job/{r.json()['job_id']}")).json()
        assert status["seed"] == seeds[-1]
    assert all(isinstance(s, int) and s >= 0 for s in seeds) and seeds[0] != seeds[1]


T2V_BAD = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x", "num_frames": 129}, "num_frames"),
    ({"prompt": "x", "num_frames": 0}, "num_frames"),
    ({"prompt": "x", "num_frames": "many"}, "num_frames"),
    ({"prompt": "x", "fps": 0}, "fps"),
    ({"prompt": "x", "width": 500}, "width"),
    ({"prompt": "x", "height": 4096}, "height"),
    ({"prompt": "x", "seed": -2}, "seed"),
    ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "guidance_scale": 21}, "guidance_scale"),
    ({"prompt": "x", "guidance_scale": "high"}, "guidance_scale"),
    ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "x", "num_inference_steps": 101}, "num_inference_steps"),
    ({"prompt": "x", "colour": "red"}, "colour"),
    ([1, 2], "body"),
]


async def test_text_to_video_bad_input_is_400_naming_the_field(api: Api) -> None:
    for body, field in T2V_BAD:
        r = await api.client.post("/api/v1/generate/text-to-video", json=body)
        assert_error(r, 400, field, "Invalid request")
    assert (await api.client.get("/api/jobs")).json()["total"] == 0


async def test_text_to_video_not_json_is_400(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/text-to-video",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_error(r, 400, "JSON")
    r = await api.client.post("/api/v1/generate/text-to-video")
    assert_error(r, 400)


async def test_an_unexpected_failure_is_500_with_an_error(api: Api) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    api.services.jobs.create = broken  # type: ignore[method-assign]
    r = await api.client.post("/api/v1/generate/text-to-video", json={"prompt": "x"})
    assert_error(r, 500, "Internal server error")
    r = await api.client.post(
        "/api/v1/generate/image-to-video", files={"image": ("a.png", png_bytes(), "image/png")}
    )
    assert_error(r, 500, "Internal server error")
    assert api.uploads() == []


# -- image to video ------------------------------------------------------------------------


async def test_image_to_video_takes_the_seed_form(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/image-to-video",
        files={"image": ("../../photo.png", png_bytes(), "image/png")},
        data={
            "prompt": "A dog running in a park",
            "num_frames": "13",
            "fps": "12",
            "width": "96",
            "height": "64",
            "seed": "7",
            "guidance_scale": "5",
            "num_inference_steps": "30",
            "negative_prompt": "blur",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_frames"] == 13 and body["seed"] == 7 and body["status"] == "pending"
    job = await api.native_job(body["job_id"])
    params = job["params"]
    assert (params["width"], params["height"], params["length"], params["fps"]) == (96, 64, 13, 12)
    assert (params["cfg"], params["steps"]) == (5.0, 30)
    assert params["prompt"] == "A dog running in a park"
    assert params["image"].startswith("fastwan_") and params["image"].endswith(".png")
    assert job["request"]["image"] == "photo.png"
    stored = api.uploads()
    assert len(stored) == 1 and params["image"] == f"fastwan_{stored[0]}"


async def test_image_to_video_defaults(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/image-to-video",
        files={"image": ("x.jpg", png_bytes(), "image/jpeg")},
        data={"seed": ""},
    )
    body = r.json()
    assert body["num_frames"] == 61
    params = (await api.native_job(body["job_id"]))["params"]
    assert (params["width"], params["height"]) == (512, 512)
    assert (params["cfg"], params["steps"]) == (1.0, 8)  # FastWAN's, not the seed's 7.5, 50
    assert params["prompt"] == "" and params["seed"] >= 0
    await api.client.post(f"/api/jobs/{body['job_id']}/stop")


async def test_image_to_video_bad_input(api: Api) -> None:
    url = "/api/v1/generate/image-to-video"
    png = ("a.png", png_bytes(), "image/png")
    cases = [
        ({"files": {"photo": png}}, 400, "photo"),  # an unexpected file field
        ({"data": {"prompt": "no file"}, "files": {"x": ("", b"", "text/plain")}}, 400, "image"),
        (
            {"files": {"image": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300, "image/png")}},
            400,
            "cannot be decoded",
        ),
        ({"files": {"image": ("a.png", mp4_bytes(), "image/png")}}, 400, "not an image"),
        ({"files": {"image": ("a.png", b"just words, not pixels" * 10, "image/png")}}, 400, "text"),
        ({"files": {"image": png}, "data": {"num_frames": "abc"}}, 400, "num_frames"),
        ({"files": {"image": png}, "data": {"width": "100"}}, 400, "width"),
        ({"files": {"image": png}, "data": {"guidance_scale": "50"}}, 400, "guidance_scale"),
        ({"files": {"image": png}, "data": {"strength": "0.5"}}, 400, "strength"),
        ({"json": {"prompt": "a json body"}}, 400, "multipart/form-data"),
    ]
    for kwargs, status, word in cases:
        r = await api.client.post(url, **kwargs)
        assert_error(r, status, word)
    boundary = "xyz"
    text_only = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n'
        f"--{boundary}--\r\n"
    )
    r = await api.client.post(
        url,
        content=text_only.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(r, 400, "image", "required")
    assert api.uploads() == []
    assert (await api.client.get("/api/jobs")).json()["total"] == 0


async def test_oversize_upload_is_413_with_the_limit(
    standin: StandinProcess, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", comfyui_urls=[standin.url], max_upload_bytes=2000
    )
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    async with running(settings) as api:
        r = await api.client.post(
            "/api/v1/generate/image-to-video",
            files={"image": ("big.png", buf.getvalue(), "image/png")},
        )
        assert_error(r, 413, "2000 bytes")
        r = await api.client.post(
            "/api/v1/generate/video-to-video",
            files={"video": ("big.mp4", b"\0" * 200_000, "video/mp4")},
        )
        assert_error(r, 413, "2000 bytes")
        assert api.uploads() == []


# -- video to video ------------------------------------------------------------------------


async def test_video_to_video_takes_the_seed_form(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/video-to-video",
        files={"video": ("clip.mp4", mp4_bytes(frames=14, size=(96, 64)), "video/mp4")},
        data={"prompt": "Transform into anime style", "strength": "0.8"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_frames"] == 13  # 14 source frames → 13 (4k+1)
    assert "96x64, 13 frames of the source's 14" in body["message"]
    params = (await api.native_job(body["job_id"]))["params"]
    assert (params["strength"], params["width"], params["height"]) == (0.8, 96, 64)
    assert (params["cfg"], params["steps"], params["fps"]) == (1.0, 8, 24)  # FastWAN's own
    assert params["video"].startswith("fastwan_") and params["video"].endswith(".mp4")


async def test_video_to_video_sizes_follow_the_source(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/generate/video-to-video",
        files={"video": ("clip.mp4", mp4_bytes(frames=5, size=(1920, 1080)), "video/mp4")},
        data={"strength": "0.3", "num_frames": "3"},
    )
    params = (await api.native_job(r.json()["job_id"]))["params"]
    # 16:9 at about 1280x704 pixels, in multiples of 32; at most num_frames (3 → 1) frames.
    assert (params["width"], params["height"], params["length"]) == (1280, 704, 1)
    assert params["strength"] == 0.3


async def test_video_to_video_bad_input(api: Api) -> None:
    url = "/api/v1/generate/video-to-video"
    mp4 = ("a.mp4", mp4_bytes(), "video/mp4")
    cases = [
        (
            {"files": {"video": ("a.mp4", b"I am a text file, not a video\n" * 5, "video/mp4")}},
            "text",
        ),
        ({"files": {"video": ("a.mp4", png_bytes(), "video/mp4")}}, "PNG image, not a video"),
        (
            {"files": {"video": ("a.mp4", mp4_bytes()[:80] + b"\0" * 500, "video/mp4")}},
            "cannot be decoded",
        ),
        ({"files": {"image": mp4}}, "image"),
        ({"files": {"video": mp4}, "data": {"strength": "1.5"}}, "strength"),
        ({"files": {"video": mp4}, "data": {"strength": "lots"}}, "strength"),
        ({"files": {"video": mp4}, "data": {"seed": "-7"}}, "seed"),
        ({"files": {"video": mp4}, "data": {"width": "33"}}, "width"),
    ]
    for kwargs, word in cases:
        assert_error(await api.client.post(url, **kwargs), 400, word)
    assert api.uploads() == []
    assert (await api.client.get("/api/jobs")).json()["total"] == 0


# -- the concurrency limit -----------------------------------------------------------------


async def test_a_third_active_job_is_429_with_retry_after(tmp_path: Path) -> None:
    with standin_process(tmp_path / "comfy", step_seconds=2) as slow:
        settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[slow.url])
        async with running(settings) as api:
            ids = []
            for _ in range(2):
                r = await api.client.post(
                    "/api/v1/generate/text-to-video", json={"prompt": "slow", **SMALL}
                )
                assert r.status_code == 200
                ids.append(r.json()["job_id"])
            r = await api.client.post(
                "/api/v1/generate/text-to-video", json={"prompt": "one too many", **SMALL}
            )
            assert_error(r, 429, "Too many concurrent requests")
            assert int(r.headers["retry-after"]) > 0
            for url, files in (
                ("/api/v1/generate/image-to-video", {"image": ("a.png", png_bytes(), "image/png")}),
                ("/api/v1/generate/video-to-video", {"video": ("a.mp4", mp4_bytes(), "video/mp4")}),
            ):
                r = await api.client.post(url, files=files)
                assert_error(r, 429)
                assert "retry-after" in r.headers
            assert api.uploads() == []
            assert (await api.client.get("/api/jobs")).json()["total"] == 2
            # A finished (here: stopped) job frees its place.
            for job_id in ids:
                await api.client.post(f"/api/jobs/{job_id}/stop")
            r = await api.client.post(
                "/api/v1/generate/text-to-video", json={"prompt": "after", **SMALL}
            )
            assert r.status_code == 200
            await api.client.post(f"/api/jobs/{r.json()['job_id']}/stop")


async def test_concurrent_requests_cannot_pass_the_limit_together(tmp_path: Path) -> None:
    with standin_process(tmp_path / "comfy", step_seconds=2) as slow:
        settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[slow.url])
        async with running(settings) as api:
            responses = await asyncio.gather(
                *(
                    api.client.post(
                        "/api/v1/generate/text-to-video", json={"prompt": f"rush {i}", **SMALL}
                    )
                    for i in range(6)
                )
            )
            codes = sorted(r.status_code for r in responses)
            assert codes == [200, 200, 429, 429, 429, 429]
            assert (await api.client.get("/api/jobs")).json()["total"] == 2
            for r in responses:
                if r.status_code == 200:
                    await api.client.post(f"/api/jobs/{r.json()['job_id']}/stop")


# -- jobs and files ------------------------------------------------------------------------


async def test_unknown_job_is_404_with_an_error(api: Api) -> None:
    assert_error(
        await api.client.get("/api/v1/job/job_1234567890_abcdef123456"),
        404,
        "job_1234567890_abcdef123456",
    )


async def test_a_stopped_job_reads_as_failed(api: Api) -> None:
    r = await api.client.post("/api/v1/generate/text-to-video", json={"prompt": "x"})
    job_id = r.json()["job_id"]
    await api.client.post(f"/api/jobs/{job_id}/stop")
    body = (await api.client.get(f"/api/v1/job/{job_id}")).json()
    assert body["status"] == "failed" and body["message"].startswith("Error: ")
    assert "output_path" not in body


async def test_outputs_refuses_anything_but_a_stored_file(api: Api) -> None:
    (api.settings.outputs_path / "x.mp4.part").write_bytes(b"partial")
    for path in (
        "/outputs/..%2Fproxy.db",
        "/outputs/..%2F..%2Fetc%2Fpasswd",
        "/outputs/%2e%2e",
        "/outputs/..%5Cproxy.db",
        "/outputs/.hidden",
        "/outputs/nope.mp4",
        "/outputs/a%00.mp4",
        "/outputs/x.mp4.part",
        "/outputs/",
    ):
        r = await api.client.get(path)
        assert r.status_code == 404 and "error" in r.json(), path
        assert b"SQLite" not in r.content


# -- models --------------------------------------------------------------------------------


async def test_models_without_presence_checks_is_503(api: Api) -> None:
    # What the lifespan leaves when the model manifest cannot be loaded.
    api.services.presence = None
    api.services.downloads = None
    api.services.problems["model_files"] = "model files are unavailable: bad manifest"
    assert_error(await api.client.get("/api/v1/models"), 503, "bad manifest")
    r = await api.client.post("/api/v1/models/download", json={"model_id": "fastwan_t2v"})
    assert_error(r, 503, "bad manifest")


class FakePresence:
    def __init__(self, readiness: dict[str, Any]) -> None:
        self._readiness = readiness

    async def readiness(self) -> dict[str, Any]:
        return self._readiness


async def test_models_lists_workflows_with_readiness(api: Api) -> None:
    api.services.presence = FakePresence(  # type: ignore[assignment]
        {
            "fastwan_t2v": {"ready": True, "missing": [], "files": []},
            "fastwan_i2v": {"ready": False, "missing": ["wan2.2_vae.safetensors"], "files": []},
        }
    )
    models = {m["id"]: m for m in (await api.client.get("/api/v1/models")).json()["models"]}
    assert {"fastwan_t2v", "fastwan_i2v", "fastwan_v2v"} <= set(models)
    assert models["fastwan_t2v"]["downloaded"] is True
    assert models["fastwan_i2v"]["downloaded"] is False
    assert models["fastwan_i2v"]["missing"] == ["wan2.2_vae.safetensors"]
    assert models["fastwan_v2v"]["downloaded"] is False  # presence does not know it
    for model in models.values():
        assert {"id", "name", "provider", "cache_dir", "downloaded"} <= set(model)


class FakeDownloads:
    """Records what would be downloaded; which files a name stands for is the real rule."""

    files_for = DownloadManager.files_for

    def __init__(self, done: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.manifest = load_manifest(MANIFEST)
        self.started: list[str] = []
        self.done = done

    async def start_download(self, model_id: str) -> DownloadRecord:
        entry = self.manifest.get(model_id)
        self.started.append(model_id)
        status = DownloadStatus.completed if model_id in self.done else DownloadStatus.queued
        now = datetime.now(UTC)
        return DownloadRecord(
            id=f"dl-{model_id}",
            model_id=model_id,
            filename=entry.filename,
            folder=entry.folder,
            target_path=f"/models/{entry.folder}/{entry.filename}",
            source_url="https://example.invalid/",
            status=status,
            created_at=now,
            updated_at=now,
        )


async def test_models_download(api: Api) -> None:
    downloads = FakeDownloads()
    api.services.downloads = downloads  # type: ignore[assignment]
    url = "/api/v1/models/download"
    r = await api.client.post(url, json={"model_id": "Wan-AI/Wan2.2-TI2V-5B"})  # an alias
    body = r.json()
    assert r.status_code == 200 and body["message"] == "Model download started"
    assert body["model_id"] == "Wan-AI/Wan2.2-TI2V-5B"
    assert downloads.started == [m.id for m in downloads.manifest.required_for("fastwan_t2v")]
    assert [d["id"] for d in body["downloads"]] == [f"dl-{i}" for i in downloads.started]

    downloads.started.clear()
    r = await api.client.post(url, json={"model_id": "wan2.2-vae"})  # one model file
    assert r.json()["downloads"] == [
        {"id": "dl-wan2.2-vae", "model_id": "wan2.2-vae", "status": "queued"}
    ]

    api.services.downloads = FakeDownloads(done={"wan2.2-vae"})  # type: ignore[assignment]
    r = await api.client.post(url, json={"model_id": "wan2.2-vae"})
    assert r.json()["message"] == "Model already downloaded"

    assert_error(
        await api.client.post(url, json={"model_id": "Lightricks/LTX-Video"}),
        400,
        "model_id",
        "Lightricks/LTX-Video",
        "fastwan_t2v",
    )
    assert_error(await api.client.post(url, json={}), 400, "model_id")
    assert_error(await api.client.post(url, json={"model_id": 5}), 400, "model_id")


# -- the seed's curl examples, unchanged but for host and port -----------------------------


def seed_curl_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", require_shared(SEED_002).read_text(), re.S)
    return [
        shlex.split(block.replace("\\\n", " "))
        for block in blocks
        if block.lstrip().startswith("curl")
    ]


async def test_the_seed_curl_examples_work(api: Api, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    (tmp_path / "image.jpg").write_bytes(png_bytes())  # a PNG named .jpg: typed by content
    (tmp_path / "video.mp4").write_bytes(mp4_bytes())
    api.services.downloads = FakeDownloads()  # type: ignore[assignment]
    api.services.presence = FakePresence(  # type: ignore[assignment]
        {"fastwan_t2v": {"ready": True, "missing": [], "files": []}}
    )
    commands = seed_curl_commands()
    assert len(commands) == 6
    answers = {}
    for argv in commands:
        argv = [curl, "-s", "-w", "\n%{http_code}"] + [
            a.replace("http://localhost:8080", api.url)
            .replace("@/path/to/image.jpg", f"@{tmp_path / 'image.jpg'}")
            .replace("@/path/to/video.mp4", f"@{tmp_path / 'video.mp4'}")
            for a in argv[1:]
        ]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        text, _, code = out.decode().rpartition("\n")
        path = next(a for a in argv if a.startswith(api.url)).removeprefix(api.url)
        answers[path] = (int(code), json.loads(text))
        if path.startswith("/api/v1/generate/"):
            code, body = answers[path]
            assert code == 200 and body["job_id"] and body["status"] == "pending", (path, body)
            # Stopped at once: three jobs at a time would pass the client's limit of two.
            await api.client.post(f"/api/jobs/{body['job_id']}/stop")
    assert len([p for p in answers if p.startswith("/api/v1/generate/")]) == 3
    code, body = answers["/api/v1/job/job_1234567890_abcdef123456"]
    assert code == 404 and "error" in body
    code, body = answers["/api/v1/models"]
    assert code == 200 and body["models"][0]["downloaded"] in (True, False)
    # This server runs FastWAN; another model's id is a clear 400 listing what it can fetch.
    code, body = answers["/api/v1/models/download"]
    assert code == 400
    assert "Lightricks/LTX-Video" in body["error"] and "fastwan_t2v" in body["error"]
