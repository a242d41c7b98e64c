"""Image-to-video and video-to-video end to end through the seed-002 surface: the upload
travels proxy → ComfyUI (/upload/image), the stand-in runs the FastWAN graphs, and the
stored output has the requested size and the right frame count."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from proxy.media.probe import probe_video_sync
from proxy.settings import Settings
from tests.support import follow_job, proxy_server, standin_process

SOURCE_RGB = (210, 60, 30)


@pytest.fixture
async def seed002(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    with standin_process(tmp_path / "comfy", step_seconds=0) as standin:
        settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[standin.url])
        async with proxy_server(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                await http.get("/health")  # the lifespan has run
                services = server.app.state.services  # type: ignore[attr-defined]
                for backend in services.pool.backends:
                    assert await backend.socket.wait_connected(10)
                yield http


def source_video(container: str, frames: int, size: tuple[int, int], fps: int) -> bytes:
    """A clip whose frames darken one step at a time (so trimming is visible)."""
    codec = {"mp4": "libx264", "webm": "libvpx"}[container]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            pixels[:] = SOURCE_RGB
            pixels[:, : size[0] // 2] = 255 - i * 8
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


async def finished_video(client: httpx.AsyncClient, job_id: str, tmp_path: Path) -> Path:
    final, _ = await follow_job(client, job_id, {"completed", "failed", "stopped"})
    assert final["status"] == "completed", final.get("error")
    job = (await client.get(f"/api/v1/job/{job_id}")).json()
    assert job["status"] == "completed" and job["output_path"] == f"./outputs/{job_id}.mp4"
    video = await client.get(job["output_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    return path


async def test_image_to_video(seed002: httpx.AsyncClient, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 120), SOURCE_RGB).save(buf, format="JPEG", quality=95)
    r = await seed002.post(
        "/api/v1/generate/image-to-video",
        files={"image": ("../holiday.jpg", buf.getvalue(), "image/jpeg")},
        data={
            "prompt": "the sun sets",
            "num_frames": "12",
            "fps": "8",
            "width": "96",
            "height": "64",
            "num_inference_steps": "25",
            "seed": "5",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_frames"] == 9 and "12 → 9" in body["message"]

    info = probe_video_sync(await finished_video(seed002, body["job_id"], tmp_path))
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (96, 64, 9, 8)
    with av.open(str(tmp_path / "out.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # The image is the first frame (scaled and cropped to 96x64).
    assert np.abs(first.reshape(-1, 3).mean(axis=0) - SOURCE_RGB).max() < 12


@pytest.mark.parametrize(
    ("container", "frames"),
    [
        ("mp4", 27),  # the frame count is known at upload: ImageFromBatch takes 25
        ("webm", 22),  # unknown at upload (WebM): the VAE rounds 22 down to 21
    ],
)
async def test_video_to_video(
    seed002: httpx.AsyncClient, tmp_path: Path, container: str, frames: int
) -> None:
    data = source_video(container, frames, (160, 96), fps=12)
    r = await seed002.post(
        "/api/v1/generate/video-to-video",
        files={"video": (f"clip.{container}", data, f"video/{container}")},
        data={
            "prompt": "Transform into anime style",
            "strength": "0.6",
            "fps": "12",
            "width": "64",
            "height": "64",
            "num_inference_steps": "25",
        },
    )
    assert r.status_code == 200, r.text
    expected = (frames - 1) // 4 * 4 + 1
    info = probe_video_sync(await finished_video(seed002, r.json()["job_id"], tmp_path))
    assert (info["width"], info["height"], info["fps"]) == (64, 64, 12)
    assert info["frames"] == expected
