"""The seeds' health bodies tell the truth: "healthy" only while jobs can run, "degraded"
with the reason when no backend is up or the dispatcher is not running (both still 200: the
proxy is alive and takes jobs for later)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.services import Services
from proxy.settings import Settings
from tests.support import StandinProcess, closed_port_url, proxy_server, standin_process

JSON = {"accept": "application/json"}


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    with standin_process(tmp_path / "comfy", step_seconds=0) as proc:
        yield proc


async def bodies(client: httpx.AsyncClient) -> tuple[dict[str, object], dict[str, object]]:
    """`GET /health` (seed 002) and `GET /` as JSON (seed 001)."""
    wan21, fastwan = await client.get("/health"), await client.get("/", headers=JSON)
    assert wan21.status_code == 200 and fastwan.status_code == 200
    return wan21.json(), fastwan.json()


async def test_degraded_without_a_backend(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[closed_port_url()])
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            wan21, fastwan = await bodies(client)
    assert wan21["status"] == "degraded" and fastwan["status"] == "degraded"
    assert "no ComfyUI backend is up" in str(wan21["message"])
    assert fastwan["backends_up"] == 0 and "No ComfyUI backend" in str(fastwan["message"])


async def test_healthy_then_degraded_when_the_dispatcher_stops(
    standin: StandinProcess, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", comfyui_urls=[standin.url])
    async with proxy_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            await client.get("/health")  # served: the lifespan has run
            services: Services = server.app.state.services  # type: ignore[attr-defined]
            assert await services.pool.backends[0].socket.wait_connected(20)
            wan21, fastwan = await bodies(client)
            assert wan21["status"] == "healthy" and fastwan["status"] == "healthy"
            assert "message" not in wan21 and "message" not in fastwan

            await services.dispatcher.close()
            wan21, fastwan = await bodies(client)
    assert wan21["status"] == "degraded" and fastwan["status"] == "degraded"
    for body in (wan21, fastwan):
        assert "the dispatcher is not running" in str(body["message"]), body
