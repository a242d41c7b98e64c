"""The files the graphs produce: real H.264 MP4s and PNGs at the graph's sizes."""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from PIL import Image

from .conftest import (
    WsListener,
    i2v_graph,
    image_video_graph,
    png_bytes,
    run,
    t2v_graph,
    upload,
    v2v_graph,
)


def probe(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate),
            "frames": len(frames),
            "pixels": np.stack(frames),
        }


async def fetch_video(http: httpx.AsyncClient, entry: dict[str, Any], node: str = "58") -> dict:
    [saved] = entry["outputs"][node]["images"]
    assert entry["outputs"][node]["animated"] == [True]
    response = await http.get("/view", params=saved)
    assert response.status_code == 200
    return probe(response.content)


def mp4_bytes(frames: int, width: int, height: int, fps: int = 12) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            picture = np.full((height, width, 3), (20 * index) % 255, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


async def test_t2v_mp4(client: httpx.AsyncClient, ws: WsListener) -> None:
    _, _, entry = await run(client, ws, t2v_graph(width=96, height=64, length=9, fps=12))
    video = await fetch_video(client, entry)
    assert (video["codec"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (96, 64, 9, 12.0)
    # The pattern moves: frames differ.
    assert not np.array_equal(video["pixels"][0], video["pixels"][-1])


async def test_t2v_rounds_like_the_wan_vae(client: httpx.AsyncClient, ws: WsListener) -> None:
    _, _, entry = await run(client, ws, t2v_graph(width=100, height=72, length=7))
    video = await fetch_video(client, entry)
    assert (video["width"], video["height"], video["frames"]) == (96, 64, 5)


async def test_seed_and_prompt_change_the_picture(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    _, _, a = await run(client, ws, t2v_graph(seed=1, text="a red fox"))
    _, _, b = await run(client, ws, t2v_graph(seed=2, text="a red fox"))
    _, _, c = await run(client, ws, t2v_graph(seed=1, text="a blue whale"))
    pixels = [(await fetch_video(client, e))["pixels"] for e in (a, b, c)]
    assert not np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])


async def test_i2v_starts_from_the_image(client: httpx.AsyncClient, ws: WsListener) -> None:
    name = (await upload(client, "start.png", png_bytes(80, 40, (220, 20, 20)))).json()["name"]
    _, messages, entry = await run(client, ws, i2v_graph(name, length=9))
    assert "56" in [m["data"]["node"] for m in messages if m["type"] == "executing"]
    video = await fetch_video(client, entry)
    assert (video["width"], video["height"], video["frames"]) == (64, 64, 9)
    first = video["pixels"][0].reshape(-1, 3).mean(axis=0)
    assert first[0] > 180 and first[1] < 60 and first[2] < 60  # red, as uploaded
    last = video["pixels"][-1].reshape(-1, 3).mean(axis=0)
    assert abs(last[0] - first[0]) > 20 or abs(last[2] - first[2]) > 20


async def test_i2v_cache_follows_the_file_content(
    client: httpx.AsyncClient, ws: WsListener
) -> None:
    await upload(client, "s.png", png_bytes(color=(0, 200, 0)))
    await run(client, ws, i2v_graph("s.png"))
    await upload(client, "s.png", png_bytes(color=(0, 0, 200)), overwrite="1")
    _, messages, _ = await run(client, ws, i2v_graph("s.png"))
    assert "56" not in messages[3]["data"]["nodes"]


async def test_v2v_mp4(client: httpx.AsyncClient, ws: WsListener) -> None:
    name = (await upload(client, "source.mp4", mp4_bytes(11, 96, 48))).json()["name"]
    _, messages, entry = await run(client, ws, v2v_graph(name, width=64, height=64))
    types = [m["type"] for m in messages]
    assert "execution_success" in types, messages[-3]
    video = await fetch_video(client, entry)
    # 11 frames -> 3 latent frames -> 9 frames (4k+1), fps taken from the source.
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (64, 64, 9, 12.0)


async def test_save_image_and_image_nodes(
    client: httpx.AsyncClient, ws: WsListener, standin
) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 16, "batch_size": 5, "color": 0x102030},
        },
        "2": {
            "class_type": "ImageFromBatch",
            "inputs": {"image": ["1", 0], "batch_index": 3, "length": 10},
        },
        "3": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["2", 0],
                "upscale_method": "nearest-exact",
                "width": 64,
                "height": 0,
                "crop": "disabled",
            },
        },
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": "stills/frame"},
        },
    }
    _, _, entry = await run(client, ws, graph, extra_data={"extra_pnginfo": {"workflow": {"a": 1}}})
    images = entry["outputs"]["4"]["images"]
    assert images == [
        {"filename": f"frame_{n:05}_.png", "subfolder": "stills", "type": "output"} for n in (1, 2)
    ]
    response = await client.get("/view", params=images[1])
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (64, 32)
    assert picture.getpixel((0, 0)) == (0x10, 0x20, 0x30)
    assert picture.text["workflow"] == '{"a": 1}' and "prompt" in picture.text


def seed_outputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "test_00041_.png").write_bytes(b"x")
    (folder / "testing_00099_.mp4").write_bytes(b"x")


async def test_counter_continues_from_disk_across_extensions(
    client: httpx.AsyncClient, ws: WsListener, standin
) -> None:
    await asyncio.to_thread(seed_outputs, Path(standin.data_dir, "output", "capture"))
    _, _, entry = await run(client, ws, image_video_graph())
    assert entry["outputs"]["3"]["images"][0]["filename"] == "test_00042_.mp4"


async def test_tiny_and_odd_sizes(client: httpx.AsyncClient, ws: WsListener) -> None:
    _, _, entry = await run(client, ws, t2v_graph(width=64, height=64, length=1, text="x" * 300))
    video = await fetch_video(client, entry)
    assert (video["width"], video["height"], video["frames"]) == (64, 64, 1)
    _, messages, _ = await run(client, ws, image_video_graph(width=63, height=63))
    assert messages[-3]["type"] == "execution_error"  # H.264 yuv420p needs even sizes


async def test_batch_of_two_doubles_the_frames(client: httpx.AsyncClient, ws: WsListener) -> None:
    graph = t2v_graph(length=5)
    graph["55"]["inputs"]["batch_size"] = 2
    _, _, entry = await run(client, ws, graph)
    assert (await fetch_video(client, entry))["frames"] == 10
