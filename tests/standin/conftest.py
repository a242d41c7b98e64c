"""Fixtures for the stand-in tests: a stand-in on a free loopback port, HTTP and ws clients,
and builders for the graphs the tests run."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from comfyui.standin import StandinHandle, start_standin

REPO = Path(__file__).parents[2]
MANIFEST = REPO / "comfyui" / "models.json"
REFERENCE = REPO.parent / "shared" / "comfyui-reference"
WAIT_S = 15.0


class WsListener:
    """Reads one websocket into a queue; tests take messages with bounded waits."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # (loop time of arrival, message) of every message read, for timing checks.
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, str):
                    message = json.loads(raw)
                    self.arrivals.append((asyncio.get_running_loop().time(), message))
                    self._queue.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._queue.put_nowait(None)

    async def next(self, timeout: float = WAIT_S) -> dict[str, Any]:
        message = await asyncio.wait_for(self._queue.get(), timeout)
        if message is None:
            self._queue.put_nowait(None)
            raise ConnectionError("websocket closed")
        return message

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
    ) -> list[dict[str, Any]]:
        """Messages up to and including the first one matching ``predicate``."""
        seen = []

        async def collect() -> None:
            while True:
                message = await self.next(timeout=timeout)
                seen.append(message)
                if predicate(message):
                    return

        await asyncio.wait_for(collect(), timeout)
        return seen

    async def run_to_end(self, prompt_id: str, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        """Messages up to the prompt's terminal ``executing {node: null}``."""
        return await self.until(lambda m: is_done(m, prompt_id), timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._task, WAIT_S)


def is_done(message: dict[str, Any], prompt_id: str) -> bool:
    data = message.get("data", {})
    return (
        message["type"] == "executing"
        and data.get("node") is None
        and data.get("prompt_id") == prompt_id
    )


def types_of(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


@pytest.fixture
async def standin(tmp_path: Path) -> AsyncIterator[StandinHandle]:
    handle = await start_standin(data_dir=tmp_path / "data", with_models=MANIFEST)
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
async def bare_standin(tmp_path: Path) -> AsyncIterator[StandinHandle]:
    """A stand-in without model files."""
    handle = await start_standin(data_dir=tmp_path / "bare")
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
async def client(standin: StandinHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.url, timeout=WAIT_S) as http:
        yield http


@pytest.fixture
async def ws_factory(standin: StandinHandle) -> AsyncIterator[Callable[..., Awaitable[WsListener]]]:
    """Open websockets to the stand-in; the first message (status with sid) is consumed."""
    opened: list[WsListener] = []

    async def open_ws(client_id: str | None = None, *, url: str | None = None) -> WsListener:
        target = url or standin.ws_url
        if client_id is not None:
            target += f"?clientId={client_id}"
        listener = WsListener(await connect(target, max_size=None))
        opened.append(listener)
        hello = await listener.next()
        assert hello["type"] == "status" and "sid" in hello["data"]
        return listener

    yield open_ws
    for listener in opened:
        with contextlib.suppress(Exception):
            await listener.close()


@pytest.fixture
async def ws(ws_factory: Callable[..., Awaitable[WsListener]]) -> WsListener:
    return await ws_factory("tester")


async def submit(
    http: httpx.AsyncClient, prompt: dict[str, Any], client_id: str | None = "tester", **extra: Any
) -> str:
    """POST /prompt with a fresh prompt_id; asserts 200 and returns the id."""
    prompt_id = extra.pop("prompt_id", str(uuid.uuid4()))
    body: dict[str, Any] = {"prompt": prompt, "prompt_id": prompt_id, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    response = await http.post("/prompt", json=body)
    assert response.status_code == 200, response.text
    return prompt_id


async def run(
    http: httpx.AsyncClient, listener: WsListener, prompt: dict[str, Any], **extra: Any
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Submit, wait for the end, return (prompt_id, its messages, its history entry)."""
    prompt_id = await submit(http, prompt, **extra)
    messages = await listener.run_to_end(prompt_id)
    history = (await http.get(f"/history/{prompt_id}")).json()
    return prompt_id, messages, history[prompt_id]


def png_bytes(
    width: int = 40, height: int = 24, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(
    http: httpx.AsyncClient, name: str, content: bytes, **fields: str
) -> httpx.Response:
    return await http.post("/upload/image", files={"image": (name, content)}, data=fields)


# --- graphs ---------------------------------------------------------------------------------

_WAN_BASE: dict[str, Any] = {
    "37": {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors", "weight_dtype": "default"},
    },
    "38": {
        "class_type": "CLIPLoader",
        "inputs": {
            "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
            "type": "wan",
            "device": "default",
        },
    },
    "39": {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}},
    "60": {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {
            "lora_name": "Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors",
            "strength_model": 1.0,
            "model": ["37", 0],
        },
    },
    "48": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 8, "model": ["60", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["38", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["38", 0]}},
    "55": {
        "class_type": "Wan22ImageToVideoLatent",
        "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1, "vae": ["39", 0]},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 1,
            "steps": 4,
            "cfg": 1.0,
            "sampler_name": "uni_pc",
            "scheduler": "simple",
            "denoise": 1,
            "model": ["48", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["55", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["39", 0]}},
    "57": {"class_type": "CreateVideo", "inputs": {"fps": 24, "images": ["8", 0]}},
    "58": {
        "class_type": "SaveVideo",
        "inputs": {
            "filename_prefix": "video/ComfyUI",
            "format": "auto",
            "codec": "auto",
            "video": ["57", 0],
        },
    },
}


def t2v_graph(
    *,
    text: str = "a cat",
    seed: int = 1,
    steps: int = 4,
    width: int = 64,
    height: int = 64,
    length: int = 5,
    fps: float = 24,
) -> dict[str, Any]:
    graph = copy.deepcopy(_WAN_BASE)
    graph["6"]["inputs"]["text"] = text
    graph["3"]["inputs"].update(seed=seed, steps=steps)
    graph["55"]["inputs"].update(width=width, height=height, length=length)
    graph["57"]["inputs"]["fps"] = fps
    return graph


def i2v_graph(image_name: str, **kwargs: Any) -> dict[str, Any]:
    graph = t2v_graph(**kwargs)
    graph["56"] = {"class_type": "LoadImage", "inputs": {"image": image_name}}
    graph["55"]["inputs"]["start_image"] = ["56", 0]
    return graph


def v2v_graph(
    video_name: str,
    *,
    width: int = 64,
    height: int = 64,
    denoise: float = 0.6,
    steps: int = 4,
    seed: int = 7,
) -> dict[str, Any]:
    graph = copy.deepcopy(_WAN_BASE)
    del graph["55"]
    graph["70"] = {"class_type": "LoadVideo", "inputs": {"file": video_name}}
    graph["71"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["70", 0]}}
    graph["72"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["71", 0],
            "upscale_method": "bilinear",
            "width": width,
            "height": height,
            "crop": "center",
        },
    }
    graph["73"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["72", 0], "vae": ["39", 0]}}
    graph["3"]["inputs"].update(latent_image=["73", 0], denoise=denoise, steps=steps, seed=seed)
    graph["57"]["inputs"]["fps"] = ["71", 2]
    return graph


def image_video_graph(
    *,
    width: int = 64,
    height: int = 64,
    frames: int = 9,
    fps: float = 8,
    prefix: str = "capture/test",
    fmt: str = "auto",
    color: int = 255,
) -> dict[str, Any]:
    """EmptyImage -> CreateVideo -> SaveVideo: the graph of the recorded scenarios."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": frames, "color": color},
        },
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": fps}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["2", 0],
                "filename_prefix": prefix,
                "format": fmt,
                "codec": "auto",
            },
        },
    }


async def start_blocker(
    http: httpx.AsyncClient, *, client_id: str | None = "tester", steps: int = 400
) -> str:
    """Queue a t2v prompt that samples slowly, to hold the worker until it is interrupted."""
    await http.post("/_standin/step_seconds", json={"seconds": 0.05})
    return await submit(http, t2v_graph(steps=steps, seed=999), client_id=client_id)
