"""`up` with nothing configured uses a ComfyUI already running on this machine (asked at
COMFYUI_PROBE_URL, normally 127.0.0.1:8188) and starts the stand-in only when none answers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from proxy.launcher import find_running_comfyui
from tests.conftest import REFERENCE_DIR
from tests.support import require_shared

from .proc import nowhere, proxy_env, running_proxy


def _reference_keys() -> set[str]:
    """Every key of ComfyUI 0.3.64's /system_stats body, as the reference lists them."""
    protocol = require_shared(REFERENCE_DIR / "protocol.md").read_text()
    line = next(row for row in protocol.splitlines() if row.startswith("| `GET /system_stats`"))
    return set(re.findall(r'"(\w+)"', line.split("|")[2]))


def _real_system_stats() -> dict[str, Any]:
    """What a real ComfyUI on a GPU box answers to /system_stats: every key the reference
    lists (checked), with believable values."""
    body: dict[str, Any] = {
        "system": {
            "os": "posix",
            "ram_total": 67_000_000_000,
            "ram_free": 60_000_000_000,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.94",
            "required_templates_version": "0.1.94",
            "python_version": "3.12.3 (main) [GCC 13.2.0]",
            "pytorch_version": "2.8.0+cu128",
            "embedded_python": False,
            "argv": ["main.py", "--listen", "127.0.0.1"],
        },
        "devices": [
            {
                "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": 25_386_352_640,
                "vram_free": 24_000_000_000,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        ],
    }
    keys = {*body, *body["system"], *body["devices"][0]}
    assert keys == _reference_keys(), keys ^ _reference_keys()
    return body


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _answering(body: Any, status: int = 200) -> web.Application:
    async def system_stats(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/system_stats", system_stats)
    return app


@pytest.fixture
async def fake_comfyui() -> AsyncIterator[str]:
    """A tiny ComfyUI: /system_stats as the real one answers it, and nothing else."""
    async for url in _serve(_answering(_real_system_stats())):
        yield url


async def test_the_probe_recognises_a_comfyui(fake_comfyui):
    assert await find_running_comfyui(fake_comfyui + "/") == fake_comfyui


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"status": "ok"}, 200),  # some other web service
        ({"system": {}, "devices": "none"}, 200),
        ("<html>", 200),
        (None, 404),
    ],
)
async def test_the_probe_refuses_what_is_not_a_comfyui(body, status):
    async for url in _serve(_answering(body, status)):
        assert await find_running_comfyui(url) is None


async def test_the_probe_passes_over_another_proxys_standin():
    stats = _real_system_stats()
    stats["system"]["pytorch_version"] = "none (ComfyUI stand-in, synthetic test-pattern videos)"
    async for url in _serve(_answering(stats)):
        assert await find_running_comfyui(url) is None


async def test_nothing_listening_is_a_quick_no():
    start = time.monotonic()
    assert await find_running_comfyui(nowhere(), timeout_s=1.0) is None
    assert time.monotonic() - start < 1.5
    assert await find_running_comfyui("off") is None


async def test_up_uses_the_comfyui_already_running(tmp_path, fake_comfyui):
    env = proxy_env(tmp_path / "data", COMFYUI_PROBE_URL=fake_comfyui)
    async with running_proxy("up", env) as proxy:
        await proxy.wait_ready()
        assert f"using the ComfyUI already running at {fake_comfyui}" in proxy.text
        assert "STAND-IN" not in proxy.text
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            health = (await client.get("/")).json()
        assert health["standin"] is False
        assert [backend["url"] for backend in health["comfyui"]] == [fake_comfyui]


async def test_up_starts_the_standin_when_no_comfyui_answers(tmp_path):
    env = proxy_env(tmp_path / "data", COMFYUI_PROBE_URL=nowhere())
    async with running_proxy("up", env, "--standin-step-seconds", "0") as proxy:
        await proxy.wait_ready()
        assert "no ComfyUI answers at" in proxy.text
        assert "STAND-IN" in proxy.text and "SYNTHETIC TEST PATTERNS" in proxy.text
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            health = (await client.get("/")).json()
        assert health["standin"] is True
