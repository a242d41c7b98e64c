"""End to end: the proxy on a real loopback port, the stand-in ComfyUI as a child process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest

from proxy.settings import Settings
from tests.support import ProxyServer, StandinProcess, proxy_server, standin_process

SMALL = {"width": 64, "height": 64, "length": 9, "steps": 4, "fps": 8}


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    with standin_process(tmp_path / "comfy", step_seconds=0.05) as proc:
        yield proc


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(urls: list[str], **kw: object) -> Settings:
        defaults: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "comfyui_urls": urls,
            "ws_reconnect_max_s": 0.5,
            "backend_down_timeout_s": 5.0,
        }
        return Settings(**{**defaults, **kw})

    return make


@pytest.fixture
async def proxy(standin: StandinProcess, make_settings) -> AsyncIterator[ProxyServer]:
    async with proxy_server(make_settings([standin.url])) as server:
        yield server


@pytest.fixture
async def client(proxy: ProxyServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as http:
        yield http


ServerFactory = Callable[[Settings], AbstractAsyncContextManager[ProxyServer]]
