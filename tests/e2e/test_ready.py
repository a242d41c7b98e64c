"""Readiness tells the truth: ready with a backend up, 503 with the reasons without one."""

from __future__ import annotations

import httpx

from proxy.launcher import free_port
from proxy.services import Services
from tests.support import StandinProcess, proxy_server


async def test_ready_with_a_backend_up(standin: StandinProcess, make_settings) -> None:
    async with proxy_server(make_settings([standin.url], api_keys=["alice:k1"])) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200  # served: the lifespan ran
            services: Services = proxy.app.state.services  # type: ignore[attr-defined]
            assert await services.pool.backends[0].socket.wait_connected(20)
            r = await client.get("/ready")  # open without a key, like /health: probes carry none
            assert r.status_code == 200
            body = r.json()
            assert body.pop("replica") == services.replica  # which process answered
            assert body == {"ready": True, "reasons": [], "backends_up": 1, "backends": 1}


async def test_not_ready_without_a_backend_but_alive(make_settings) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with proxy_server(make_settings([nowhere])) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            r = await client.get("/ready")
            assert r.status_code == 503
            assert r.json()["reasons"] == ["no ComfyUI backend is up (0 of 1)"]
            assert (await client.get("/health")).status_code == 200
